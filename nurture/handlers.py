"""How nurture reacts to what the core publishes (see crm.events and settings).

The activities handler runs from the activity queue (crm.activity_queue), the stage
handler inside the core's transaction; both work per batch: one query for the triggers,
set-based exits with ``.update()``, set-based enrollment with ``bulk_create``.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict

from django.db.models import Q
from django.utils import timezone

from crm.events import handler
from crm.models import ActivityKind, Contact, Stage
from crm.models.activities import (
    is_persons,
    is_program_unsubscribe,
    is_suppressing_bounce,
    unsubscribe_link_prefix,
)

from .mail import recipient_digest
from .models import EmailSend, Enrollment, Program, Trigger
from .services.enrollment import (
    EXIT_ACCEPTED,
    EXIT_GOAL,
    EXIT_MERGED,
    EXIT_MQL,
    EXIT_SUPPRESSED,
    contacts_enroll,
    enrollments_exit,
)

SUPPRESSING = {ActivityKind.EMAIL_UNSUBSCRIBED, ActivityKind.EMAIL_COMPLAINED}
# Never a trigger: an unsubscribe (even from one program only) enrolls in no more email.
NEVER_TRIGGERS = {ActivityKind.EMAIL_UNSUBSCRIBED}
# Sales has the lead: an accepted MQL (sql) or a contact further along.
SALES_STAGES = {Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER}
# Our own sends and their echoes never trigger or end a program.
SELF_KINDS = {ActivityKind.EMAIL_SENT, ActivityKind.EMAIL_DELIVERED}


def _matches(trigger: Trigger, activity, link_prefix: str) -> bool:
    if trigger.activity_kind and activity.kind != trigger.activity_kind:
        return False
    if not is_persons(activity.kind, activity.is_machine, activity.url, link_prefix):
        # a privacy proxy's open or a scanner's click enrolls nobody; the unsubscribe
        # link's click is no click (METRICS.md, crm.models.activities)
        return False
    if trigger.campaign_id and activity.campaign_id != trigger.campaign_id:
        return False
    if trigger.url_pattern and not fnmatch.fnmatch(activity.url or "", trigger.url_pattern):
        return False
    return not (trigger.form and (activity.details or {}).get("form") != trigger.form)


@handler("queued")
def on_activities_recorded(event) -> None:
    """Exit on goal / suppression, then enroll contacts whose activity matches a trigger."""
    activities = [a for a in event.activities if a.kind not in SELF_KINDS]
    if not activities:
        return
    now = timezone.now()
    # An unsubscribe from one program only (crm.models.activities) is no suppression: the
    # unsubscribe page exited that program, the contact's others go on.
    suppressed = {
        a.contact_id
        for a in activities
        if (a.kind in SUPPRESSING and not is_program_unsubscribe(a.kind, a.details))
        or is_suppressing_bounce(a.kind, a.details)
    }
    if suppressed:
        enrollments_exit(
            queryset=Enrollment.objects.filter(contact_id__in=suppressed),
            reason=EXIT_SUPPRESSED,
            now=now,
        )
    by_kind: dict[str, list] = defaultdict(list)
    for a in activities:
        by_kind[a.kind].append(a)
    # Only kinds that are some exit-on-goal program's goal can end an enrollment: one read
    # of the (few) programs, then one UPDATE for all of them instead of one per kind. The
    # UPDATE names the programs by id, so each kind's part is a probe of the live
    # enrollments' (contact, program) index; joined to the programs' campaigns, it read
    # every live enrollment of a goal program (18 ms for 15k, profiled at 100k).
    goal_programs: dict[str, list[int]] = defaultdict(list)
    for pk, goal in Program.objects.filter(
        exit_on_goal=True, campaign__goal_action__in=list(by_kind)
    ).values_list("pk", "campaign__goal_action"):
        goal_programs[goal].append(pk)
    if goal_programs:
        reached = Q()
        for kind in sorted(goal_programs):
            reached |= Q(
                contact_id__in={a.contact_id for a in by_kind[kind]},
                program_id__in=goal_programs[kind],
            )
        enrollments_exit(queryset=Enrollment.objects.filter(reached), reason=EXIT_GOAL, now=now)
    triggers = list(
        Trigger.objects.filter(
            kind=Trigger.Kind.ACTIVITY,
            activity_kind__in=[k for k in by_kind if k not in NEVER_TRIGGERS],
            program__status=Program.Status.ACTIVE,
        ).select_related("program")
    )
    wanted: dict[int, set[int]] = defaultdict(set)
    programs: dict[int, Program] = {}
    prefix = unsubscribe_link_prefix()
    for trigger in triggers:
        programs[trigger.program_id] = trigger.program
        # The query matched the trigger's kind: only that kind's activities can match.
        for a in by_kind[trigger.activity_kind]:
            if a.contact_id not in suppressed and _matches(trigger, a, prefix):
                wanted[trigger.program_id].add(a.contact_id)
    for program_id, contact_ids in wanted.items():
        contacts_enroll(
            program=programs[program_id], contact_ids=contact_ids, source="activity", now=now
        )


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """MQL exits; accepted exits; recycled/disqualified exits; recycle programs enroll
    by reason code (every recycle round anew, whatever the program's re-entry policy)."""
    now = timezone.now()
    to_mql = {t.contact_id for t in event.transitions if t.to_stage == Stage.MQL}
    if to_mql:
        enrollments_exit(
            queryset=Enrollment.objects.filter(contact_id__in=to_mql, program__exit_on_mql=True),
            reason=EXIT_MQL,
            now=now,
        )
    accepted = {t.contact_id for t in event.transitions if t.to_stage in SALES_STAGES}
    if accepted:
        enrollments_exit(
            queryset=Enrollment.objects.filter(
                contact_id__in=accepted, program__exit_on_accept=True
            ),
            reason=EXIT_ACCEPTED,
            now=now,
        )
    for stage in (Stage.RECYCLED, Stage.DISQUALIFIED):
        ids = {t.contact_id for t in event.transitions if t.to_stage == stage}
        if ids:
            enrollments_exit(
                queryset=Enrollment.objects.filter(
                    contact_id__in=ids, program__exit_on_recycle=True
                ),
                reason=str(stage),
                now=now,
            )
    recycled: dict[str, set[int]] = defaultdict(set)
    for t in event.transitions:
        if t.to_stage == Stage.RECYCLED:
            recycled[t.reason_code or ""].add(t.contact_id)
    if not recycled:
        return
    triggers = Trigger.objects.filter(
        kind=Trigger.Kind.RECYCLED, program__status=Program.Status.ACTIVE
    ).select_related("program")
    for trigger in triggers:
        if trigger.reason_code:
            ids = recycled.get(trigger.reason_code, set())
        else:
            ids = set().union(*recycled.values())
        if ids:
            contacts_enroll(
                program=trigger.program, contact_ids=ids, source="recycled", now=now, new_round=True
            )


@handler()
def on_contacts_merging(event) -> None:
    """Move the duplicate's enrollments and sends to the kept contact.

    Both contacts may be live in one program, which the one-live-enrollment rule forbids
    for the kept contact: the duplicate's enrollment ends there ("merged") and moves like
    the others. Every send moves with its enrollment, so nothing the duplicate was sent
    is deleted with it (its unsubscribe and tracking links keep working).
    """
    keep, duplicate = event.keep_id, event.duplicate_id
    kept_live = Enrollment.objects.live().filter(contact_id=keep).values("program_id")
    enrollments_exit(
        queryset=Enrollment.objects.filter(contact_id=duplicate, program_id__in=kept_live),
        reason=EXIT_MERGED,
        now=event.at,
    )
    Enrollment.objects.filter(contact_id=duplicate).update(contact_id=keep)
    # A send written before sends recorded their address (nurture 0008) went to the
    # duplicate's: recorded now, so the provider's later events still find their contact.
    address = Contact.objects.filter(pk=duplicate).values_list("email", flat=True).first()
    if address:
        EmailSend.objects.filter(contact_id=duplicate, to_digest="").update(
            to_digest=recipient_digest(address)
        )
    EmailSend.objects.filter(contact_id=duplicate).update(contact_id=keep)
