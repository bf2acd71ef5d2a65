"""How reports reacts to what the core publishes (see crm.events and settings)."""

from crm.events import handler

from .holdout_facts import holdout_apply_enrollments, holdout_apply_transitions
from .lifecycle_facts import lifecycle_facts_apply_activities, lifecycle_facts_apply_transitions
from .nurtured_facts import nurtured_apply_enrollments
from .stage_facts import stage_facts_apply_transitions
from .upkeep import upkeep_apply_activities, upkeep_apply_transitions


@handler("queued")
def on_activities_recorded(event) -> None:
    """Add the batch's deltas to the email rollup and the step facts (one pass, set-based)."""
    upkeep_apply_activities(activities=event.activities, unapplied=event.unapplied_ids)
    lifecycle_facts_apply_activities(activities=event.activities)  # attribution credits


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """Add the transitions' entries to the stage rollup."""
    upkeep_apply_transitions(transitions=event.transitions)
    lifecycle_facts_apply_transitions(transitions=event.transitions)  # funnel, credits
    holdout_apply_transitions(transitions=event.transitions)  # holdout lift's opportunities
    stage_facts_apply_transitions(transitions=event.transitions)  # stage counts, populations


@handler("in_transaction")
def on_enrollments_created(event) -> None:
    """Move the batch's enrolled new leads into their nurture group (funnel nurtured rows)."""
    nurtured_apply_enrollments(
        program_id=event.program_id, contact_ids=event.contact_ids, entered_at=event.entered_at
    )
    holdout_apply_enrollments(
        program_id=event.program_id, contact_ids=event.contact_ids, entered_at=event.entered_at
    )
