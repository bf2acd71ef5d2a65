"""Sales hand-off services: deciding MQLs, deals and churn (ARCHITECTURE.md, flow 4).

Every stage change goes through :mod:`crm.lifecycle` with the reason code of the decision,
so scoring (engagement points on recycle) and nurture (program exits, recycle program per
reason code) react through the stage-changed handlers; this module imports neither.

A decision on an MQL is conditional on the contact still being an MQL
(``expected_from``): of two reps deciding at once, the second waits for the first's row
lock, then sees the new stage and gets :class:`AlreadyDecided` — one history row, never two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from . import events, lifecycle
from .lifecycle import StageChangeError
from .models import Contact, Deal, LifecycleTransition, Notification, RejectionReason, Stage

# What a decision on an MQL did, as said to the rep who lost the race.
_DECISION_VERBS = {
    Stage.SQL: "accepted",
    Stage.OPPORTUNITY: "accepted",
    Stage.CUSTOMER: "accepted",
    Stage.RECYCLED: "rejected (not ready)",
    Stage.DISQUALIFIED: "disqualified",
}


class AlreadyDecided(StageChangeError):
    """The MQL was decided (or moved) by someone else first; carries who and when."""

    def __init__(
        self,
        message: str,
        *,
        current_stage: str,
        decided_by: str = "",
        decided_at: datetime | None = None,
    ):
        super().__init__(message, current_stage=current_stage)
        self.decided_by = decided_by
        self.decided_at = decided_at


class DealClosed(Exception):
    """Winning, losing or editing a deal that is already won or lost (HTTP 409)."""

    def __init__(self, message: str, *, status: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Decision:
    transition: LifecycleTransition
    deal: Deal | None = None


def _user_name(user) -> str:
    return (user.get_full_name() or user.get_username()) if user else ""


def _ago(at: datetime) -> str:
    """ "2 minutes ago" with plain spaces (the message also goes into JSON), or "just now"."""
    since = timesince(at).replace("\xa0", " ")
    return "just now" if since.startswith("0 ") else f"{since} ago"


def _already_decided(contact_id: int, err: StageChangeError, by) -> AlreadyDecided:
    """Explain a lost race: "Sasha accepted this lead 2 minutes ago; it is Opportunity now".

    The decision is the latest move out of ``mql`` after the latest move into it, whatever
    happened since (an accept that opened a deal went on to ``opportunity``).
    """
    history = LifecycleTransition.objects.filter(contact_id=contact_id).order_by("-at", "-id")
    last = history.filter(from_stage=Stage.MQL).select_related("by_user").first()
    entered = history.filter(to_stage=Stage.MQL).first()
    stage_label = Stage(err.current_stage).label
    if (
        last is None
        or err.current_stage == Stage.MQL
        or (entered is not None and (entered.at, entered.pk) > (last.at, last.pk))
    ):
        return AlreadyDecided(
            f"This contact is not an MQL: it is {stage_label} now.",
            current_stage=err.current_stage,
        )
    if by is not None and last.by_user_id == by.pk:
        who = "You"
    elif last.by_user_id:
        who = _user_name(last.by_user)
    else:
        who = last.actor.capitalize()
    verb = _DECISION_VERBS.get(last.to_stage, f"moved to {Stage(last.to_stage).label}")
    return AlreadyDecided(
        f"{who} {verb} this lead {_ago(last.at)}; it is {stage_label} now.",
        current_stage=err.current_stage,
        decided_by=_user_name(last.by_user) or last.actor,
        decided_at=last.at,
    )


def _notify_owner(contact_id: int, by, what: str) -> None:
    """Tell the lead's owner when another rep decided it (their queue changed under them)."""
    contact = (
        Contact.objects.filter(pk=contact_id)
        .only("id", "owner_id", "first_name", "last_name", "email")
        .first()
    )
    if (
        contact is None
        or contact.owner_id is None
        or (by is not None and contact.owner_id == by.pk)
    ):
        return
    Notification.objects.create(
        user_id=contact.owner_id,
        text=f"{_user_name(by) or 'Someone'} {what} {contact}."[:300],
        url=reverse("crm:mql-detail", args=[contact_id]),
    )


def _parse_amount(amount) -> Decimal:
    try:
        value = Decimal(str(amount))
    except (InvalidOperation, ValueError, TypeError):
        raise ValidationError({"amount": ["Enter a number."]}) from None
    if not value.is_finite() or value < 0:
        raise ValidationError({"amount": ["The amount must be zero or more."]})
    if value >= Decimal("1e12"):
        raise ValidationError({"amount": ["The amount is too large."]})
    return value.quantize(Decimal("0.01"))


def rejection_reason_get(*, code: str) -> RejectionReason:
    """The active reason with ``code``, or a validation error naming the valid codes."""
    reason = RejectionReason.objects.filter(code=code, active=True).first()
    if reason is None:
        codes = ", ".join(
            RejectionReason.objects.filter(active=True).values_list("code", flat=True)
        )
        raise ValidationError(
            {"reason": [f"Unknown rejection reason {code!r}; use one of {codes}."]}
        )
    return reason


def mql_accept(
    *, contact_id: int, by, amount: Decimal | str | None = None, deal_name: str = ""
) -> Decision:
    """Accept an MQL: move it to ``sql`` (claiming it if unassigned), optionally open a deal.

    A deal moves the contact on to ``opportunity`` in the same transaction.
    """
    value = None if amount is None or amount == "" else _parse_amount(amount)
    try:
        with transaction.atomic():
            transition = _accept(contact_id, by)
            deal = None
            if value is not None:
                contact = Contact.objects.get(pk=contact_id)
                deal = _deal_open(contact=contact, amount=value, by=by, name=deal_name)
    except StageChangeError as err:
        raise _already_decided(contact_id, err, by) from err
    return Decision(transition=transition, deal=deal)


def _accept(contact_id: int, by, at: datetime | None = None) -> LifecycleTransition:
    """mql → sql by ``by`` (claiming the lead if unassigned, else telling its owner);
    the caller holds a transaction."""
    transition = lifecycle.stage_change(
        contact=contact_id, to_stage=Stage.SQL, at=at, by_user=by, expected_from=[Stage.MQL]
    )
    claimed = Contact.objects.filter(pk=contact_id, owner__isnull=True).update(owner=by)
    if claimed:
        events.contacts_changed([contact_id], fields={"owner"})
    else:
        _notify_owner(contact_id, by, "accepted your lead")
    return transition


def _accept_if_mql(contact_id: int, by, at: datetime | None) -> None:
    """A deal opened or won on an MQL is its acceptance: record the decision first, so the
    lead counts as accepted (METRICS.md) instead of leaving the queue undecided."""
    stage = (
        Contact.objects.select_for_update(no_key=True)
        .values_list("stage", flat=True)
        .get(pk=contact_id)
    )
    if stage == Stage.MQL:
        _accept(contact_id, by, at)


def mql_reject(*, contact_id: int, by, reason_code: str, note: str = "") -> Decision:
    """Reject an MQL with a reason: ``recycled`` (not ready) or ``disqualified`` (bad fit).

    The reason code goes on the transition: nurture picks the recycle program by it and
    lifecycle numbers the recycle round.
    """
    reason = rejection_reason_get(code=reason_code)
    try:
        with transaction.atomic():
            transition = lifecycle.stage_change(
                contact=contact_id,
                to_stage=reason.outcome,
                by_user=by,
                reason_code=reason.code,
                note=note.strip(),
                expected_from=[Stage.MQL],
            )
            _notify_owner(contact_id, by, f"rejected ({reason.label}) your lead")
    except StageChangeError as err:
        raise _already_decided(contact_id, err, by) from err
    return Decision(transition=transition)


def mql_claim(*, contact_id: int, by) -> Contact:
    """Assign an unassigned MQL to ``by``; refuse if another rep owns it already."""
    with transaction.atomic():
        contact = Contact.objects.select_for_update(no_key=True).get(pk=contact_id)
        if contact.stage != Stage.MQL:
            raise StageChangeError(
                f"This contact is not an MQL: it is {contact.get_stage_display()} now.",
                current_stage=contact.stage,
            )
        if contact.owner_id == by.pk:
            return contact
        if contact.owner_id is not None:
            raise ValidationError(
                {"owner": [f"{_user_name(contact.owner)} owns this lead already."]}
            )
        Contact.objects.filter(pk=contact_id).update(owner=by, updated_at=timezone.now())
        contact.owner = by
        events.contacts_changed([contact_id], fields={"owner"})
    return contact


def _deal_open(
    *, contact: Contact, amount: Decimal, by, name: str = "", created_at: datetime | None = None
) -> Deal:
    """Create the deal and move the contact to ``opportunity`` (caller holds a transaction).

    A customer stays a customer (a new deal is an expansion, not a step back); a churned
    contact becomes an opportunity again (win-back).
    """
    created_at = created_at or timezone.now()
    deal = Deal.objects.create(
        contact=contact,
        company_id=contact.company_id,
        name=name.strip() or f"{contact} deal"[:200],
        amount=amount,
        owner=by,
        created_at=created_at,
    )
    _accept_if_mql(contact.pk, by, created_at)
    contact.refresh_from_db(fields=["stage", "stage_changed_at", "recycle_round"])
    if contact.stage not in (Stage.OPPORTUNITY, Stage.CUSTOMER):
        lifecycle.stage_change(
            contact=contact, to_stage=Stage.OPPORTUNITY, at=created_at, by_user=by
        )
    return deal


def deal_create(
    *,
    contact: Contact,
    amount: Decimal | str | int,
    by,
    name: str = "",
    created_at: datetime | None = None,
) -> Deal:
    """Open a deal for a contact; the contact moves to ``opportunity``."""
    value = _parse_amount(amount)
    if created_at is not None and timezone.is_naive(created_at):
        raise ValidationError({"created_at": ["Give the time with a time zone."]})
    with transaction.atomic():
        return _deal_open(contact=contact, amount=value, by=by, name=name, created_at=created_at)


def deal_update(*, deal: Deal, by, **fields) -> Deal:
    """Edit an open deal's name, amount or owner; status changes only by win/lose."""
    allowed = {"name", "amount", "owner"}
    unknown = set(fields) - allowed
    if unknown:
        raise ValidationError({f: ["This field cannot be changed here."] for f in unknown})
    if "amount" in fields:
        fields["amount"] = _parse_amount(fields["amount"])
    with transaction.atomic():
        locked = Deal.objects.select_for_update().get(pk=deal.pk)
        if locked.status != Deal.Status.OPEN:
            raise DealClosed(
                f"The deal is {locked.get_status_display().lower()}; it can no longer be edited.",
                status=locked.status,
            )
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save(update_fields=list(fields))
    return locked


def _lock_open_deal(deal: Deal) -> Deal:
    locked = Deal.objects.select_for_update().get(pk=deal.pk)
    if locked.status != Deal.Status.OPEN:
        raise DealClosed(
            f"The deal is already {locked.get_status_display().lower()}.",
            status=locked.status,
        )
    return locked


def deal_win(*, deal: Deal, by, closed_at: datetime | None = None) -> Deal:
    """Mark the deal won; the contact becomes a ``customer`` at the close time."""
    closed_at = closed_at or timezone.now()
    if timezone.is_naive(closed_at):
        raise ValidationError({"closed_at": ["Give the time with a time zone."]})
    with transaction.atomic():
        locked = _lock_open_deal(deal)
        if closed_at < locked.created_at:
            raise ValidationError({"closed_at": ["A deal cannot close before it was created."]})
        Deal.objects.filter(pk=locked.pk).update(status=Deal.Status.WON, closed_at=closed_at)
        _accept_if_mql(locked.contact_id, by, closed_at)
        contact = Contact.objects.get(pk=locked.contact_id)
        if contact.stage != Stage.CUSTOMER:
            lifecycle.stage_change(
                contact=contact, to_stage=Stage.CUSTOMER, at=closed_at, by_user=by
            )
    locked.refresh_from_db()
    return locked


def deal_lose(*, deal: Deal, by, reason: str, recycle_reason_code: str | None = None) -> Deal:
    """Mark the deal lost with a reason; optionally recycle the contact (a not-ready reason).

    Recycling is refused while the contact has another open deal: it is still being sold to.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": ["Say why the deal was lost."]})
    recycle = rejection_reason_get(code=recycle_reason_code) if recycle_reason_code else None
    if recycle is not None and recycle.outcome != RejectionReason.Outcome.RECYCLE:
        raise ValidationError(
            {"recycle_reason": [f"{recycle.label} is not a not-ready reason; it cannot recycle."]}
        )
    with transaction.atomic():
        locked = _lock_open_deal(deal)
        now = timezone.now()
        Deal.objects.filter(pk=locked.pk).update(
            status=Deal.Status.LOST, closed_at=now, lost_reason=reason[:200]
        )
        if recycle is not None:
            if Deal.objects.filter(contact_id=locked.contact_id, status=Deal.Status.OPEN).exists():
                raise ValidationError(
                    {
                        "recycle_reason": [
                            "The contact has another open deal, so it cannot be recycled; "
                            "close that deal first or lose this one without recycling."
                        ]
                    }
                )
            lifecycle.stage_change(
                contact=locked.contact_id,
                to_stage=Stage.RECYCLED,
                at=now,
                by_user=by,
                reason_code=recycle.code,
                note=f"Deal lost: {reason}",
            )
    locked.refresh_from_db()
    return locked


def deal_delete(*, deal: Deal, by) -> None:
    """Delete an open deal entered by mistake; won and lost deals are revenue history."""
    with transaction.atomic():
        locked = _lock_open_deal(deal)
        locked.delete()


def customer_churn(
    *, contact: Contact, by, at: datetime | None = None, note: str = ""
) -> LifecycleTransition:
    """Mark a customer churned (it may come back later through a new deal)."""
    if at is not None and timezone.is_naive(at):
        raise ValidationError({"at": ["Give the time with a time zone."]})
    return lifecycle.stage_change(
        contact=contact,
        to_stage=Stage.CHURNED,
        at=at,
        by_user=by,
        note=note.strip(),
        expected_from=[Stage.CUSTOMER],
    )
