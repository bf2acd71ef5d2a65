"""How reports reacts to what the core publishes (see crm.events and settings)."""

from crm.events import handler

from .lifecycle_facts import lifecycle_facts_apply_activities, lifecycle_facts_apply_transitions
from .upkeep import upkeep_apply_activities, upkeep_apply_transitions


@handler("in_transaction")
def on_activities_recorded(event) -> None:
    """Add the batch's deltas to the email rollup and the step facts (one pass, set-based)."""
    upkeep_apply_activities(activities=event.activities)
    lifecycle_facts_apply_activities(activities=event.activities)  # attribution credits


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """Add the transitions' entries to the stage rollup."""
    upkeep_apply_transitions(transitions=event.transitions)
    lifecycle_facts_apply_transitions(transitions=event.transitions)  # funnel, credits
