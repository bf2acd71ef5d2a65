"""How scoring reacts to what the core publishes (see crm.events and settings)."""

from crm.events import handler


@handler("in_transaction")
def on_activities_recorded(event) -> None:
    """Called once per stored activity batch."""


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """Called once per group of lifecycle transitions."""


@handler("in_transaction")
def on_contacts_changed(event) -> None:
    """Re-evaluate fit rules for contacts whose profile changed."""
