"""How reports reacts to what the core publishes (see crm.events and settings)."""

from django.utils import timezone

from crm.events import handler
from crm.models import Contact

from .credit_facts import campaign_leads_refresh
from .holdout_facts import holdout_apply_enrollments, holdout_apply_transitions
from .lifecycle_facts import (
    contacts_facts_rebuild,
    lifecycle_facts_apply_activities,
    lifecycle_facts_apply_transitions,
    new_leads_refresh,
)
from .nurtured_facts import nurtured_apply_enrollments
from .query import site_tz
from .stage_facts import stage_facts_apply_merge, stage_facts_apply_transitions
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
def on_contacts_merging(event) -> None:
    """The merge has moved the duplicate's history and activities: both records' facts are
    recomputed — the kept one's from the merged history (two first entries into a stage
    become one), the duplicate's to none — and the day rows (cohorts, drop-offs, credits)
    move by the difference, each first entry counted off on its own creation day."""
    contacts_facts_rebuild(contact_ids=[event.keep_id, event.duplicate_id])
    stage_facts_apply_merge(
        keep_id=event.keep_id,
        duplicate_id=event.duplicate_id,
        moved=set(event.moved_transition_ids),
    )
    # The duplicate was a new lead of its creation day; it goes with the merge.
    created = Contact.objects.filter(pk=event.duplicate_id).values_list("created_at", flat=True)
    days = {timezone.localtime(at, site_tz()).date() for at in created}
    new_leads_refresh(days=days, exclude=[event.duplicate_id])
    campaign_leads_refresh(days=days, exclude=[event.duplicate_id])


@handler("in_transaction")
def on_enrollments_created(event) -> None:
    """Move the batch's enrolled new leads into their nurture group (funnel nurtured rows)."""
    nurtured_apply_enrollments(
        program_id=event.program_id, contact_ids=event.contact_ids, entered_at=event.entered_at
    )
    holdout_apply_enrollments(
        program_id=event.program_id, contact_ids=event.contact_ids, entered_at=event.entered_at
    )
