"""How reports reacts to what the core publishes (see crm.events and settings)."""

from crm.events import handler

from .facts import facts_apply_activities
from .lifecycle_facts import lifecycle_facts_apply_activities, lifecycle_facts_apply_transitions
from .rollups import rollups_apply_activities, rollups_apply_transitions


@handler("in_transaction")
def on_activities_recorded(event) -> None:
    """Keep the email rollup current for the batch (set-based, idempotent)."""
    rollups_apply_activities(activities=event.activities)
    facts_apply_activities(activities=event.activities)
    lifecycle_facts_apply_activities(activities=event.activities)  # attribution credits


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """Keep the stage rollup current for the days of the transitions."""
    rollups_apply_transitions(transitions=event.transitions)
    lifecycle_facts_apply_transitions(transitions=event.transitions)  # funnel, credits
