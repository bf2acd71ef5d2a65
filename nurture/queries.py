"""Reads for the nurture pages: program list figures and the per-step funnel."""

from __future__ import annotations

from django.db.models import Count, Exists, OuterRef, Q

from crm.models import Activity, ActivityKind
from crm.models.activities import click_q, converting_click_q, open_q

from .models import LIVE_STATES, EmailSend, Enrollment, Program


def programs_with_counts():
    """Program list: one query with live/total enrollments and emails sent."""
    return Program.objects.select_related("campaign").annotate(
        live=Count("enrollments", filter=Q(enrollments__state__in=LIVE_STATES), distinct=True),
        entered=Count("enrollments", distinct=True),
        sent=Count("sends", filter=Q(sends__status=EmailSend.Status.SENT), distinct=True),
    )


def _event(cond: Q):
    return Exists(Activity.objects.filter(cond, message_id=OuterRef("message_id")).values("pk"))


def step_funnel(program: Program) -> dict[int, dict[str, int]]:
    """Per email step: sent, bounced, delivered, opened, clicked, unsubscribed, converted.

    Definitions from METRICS.md "Email and program engagement", with the email report's
    click and open (``crm.models.activities``): delivered = sent − bounced; a click is a
    person's on any link but the unsubscribe link (a machine's click or the unsubscribe
    link's is no click, and implies no open); unique opens exclude machine opens and
    include clickers; unsubscribed = from all email or from this program only (both
    unsubscribed from the email, ``crm.models.activities``); conversion = a click on the
    email followed by the campaign's goal action within the attribution window, counted
    from that click (``converting_click_q``, the email report's definition).

    Every figure counts emails (sends) with the event, as the email report's per-step
    table does and as sent and delivered do: a contact who re-entered the program and
    opened the step's email both times is two opens of two delivered emails (each email's
    recipient is one contact, so per email this is the METRICS.md count of contacts).
    """
    sends = EmailSend.objects.filter(program=program, status=EmailSend.Status.SENT).annotate(
        bounced=_event(Q(kind=ActivityKind.EMAIL_BOUNCED)),
        opened=_event(open_q()),
        clicked=_event(click_q()),
        unsubscribed=_event(Q(kind=ActivityKind.EMAIL_UNSUBSCRIBED)),
    )
    goal = program.campaign.goal_action
    if goal:
        sends = sends.annotate(converted=_event(converting_click_q(goal)))
    rows = sends.values("step_id").annotate(
        sent=Count("id"),
        bounced_n=Count("id", filter=Q(bounced=True)),
        opened_n=Count("id", filter=Q(opened=True)),
        clicked_n=Count("id", filter=Q(clicked=True)),
        unsubscribed_n=Count("id", filter=Q(unsubscribed=True)),
        converted_n=(
            Count("id", filter=Q(converted=True)) if goal else Count("id", filter=Q(pk__lt=0))
        ),
    )
    funnel = {}
    for r in rows:
        funnel[r["step_id"]] = {
            "sent": r["sent"],
            "bounced": r["bounced_n"],
            "delivered": r["sent"] - r["bounced_n"],
            "opened": r["opened_n"],
            "clicked": r["clicked_n"],
            "unsubscribed": r["unsubscribed_n"],
            "converted": r["converted_n"],
        }
    skipped = (
        EmailSend.objects.filter(program=program)
        .exclude(status=EmailSend.Status.SENT)
        .values("step_id", "status")
        .annotate(n=Count("id"))
    )
    for r in skipped:
        funnel.setdefault(r["step_id"], {}).setdefault(r["status"], 0)
        funnel[r["step_id"]][r["status"]] += r["n"]
    return funnel


def program_summary(program: Program) -> dict:
    """Where contacts are (live per current step) and why they left (exit reasons)."""
    by_state = dict(
        Enrollment.objects.filter(program=program)
        .values("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    at_step = dict(
        Enrollment.objects.filter(program=program, state__in=LIVE_STATES)
        .values("current_step_id")
        .annotate(n=Count("id"))
        .values_list("current_step_id", "n")
    )
    exits = list(
        Enrollment.objects.filter(program=program, state=Enrollment.State.EXITED)
        .values("exit_reason")
        .annotate(n=Count("id"))
        .order_by("-n")
    )
    return {
        "entered": sum(by_state.values()),
        "live": sum(by_state.get(s, 0) for s in LIVE_STATES),
        "by_state": by_state,
        "at_step": at_step,
        "exits": exits,
    }


def failed_sends(program: Program, limit: int = 50):
    return (
        EmailSend.objects.filter(
            program=program, status__in=[EmailSend.Status.FAILED, EmailSend.Status.RETRYING]
        )
        .select_related("contact")
        .order_by("-created_at")[:limit]
    )
