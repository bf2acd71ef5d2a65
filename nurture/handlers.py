"""How nurture reacts to what the core publishes (see crm.events and settings)."""

from crm.events import handler


@handler("in_transaction")
def on_activities_recorded(event) -> None:
    """Called once per stored activity batch."""


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """Called once per group of lifecycle transitions."""
