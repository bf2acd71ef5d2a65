"""MQL hand-off: threshold crossings → ``mql`` through crm.lifecycle, owners, notices."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.db.models import Case, Count, F, OuterRef, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from crm import lifecycle
from crm.mail_tasks import MAIL_ERRORS
from crm.models import Contact, Notification, Stage
from crm.roles import Role

from .models import AssignmentRule, LedgerEntry, PendingOwnerEmail, Rule, ScoringSettings
from .writes import ids_q, int_array

log = logging.getLogger(__name__)
MQL_FROM = (Stage.LEAD, Stage.RECYCLED)  # a contact already past mql is never pulled back
# How long a claim on pending owner emails holds: far longer than one batch's mail takes.
# A worker that dies holding it delays those mails by this much (then they go, once more
# for an owner whose mail had left just before the death).
OWNER_EMAIL_LEASE = timedelta(minutes=10)
# The sweep leaves rows this young to the hand-off's own task.
OWNER_EMAIL_SWEEP_AFTER = timedelta(minutes=2)
# Rows still pending this long are given up, with an error logged: a mail server that
# refuses an owner's address for days would otherwise be retried, and logged, every minute
# for ever. The owner still has the in-app notice.
OWNER_EMAIL_GIVE_UP_AFTER = timedelta(days=2)


def mqls_hand_off(
    *, entries: Iterable[LedgerEntry], scores: dict[int, int] | None = None
) -> list[int]:
    """Move contacts that these new entries pushed over the threshold to ``mql``.

    Dated at the entry (activity) that pushed each contact over. One query reads the
    candidates (stage, score, when a minimum fit is set their fit total, and what owner
    assignment and the notices need), then lifecycle's bulk move. ``scores`` (new scores
    known by the caller) lets it skip everything when no contact reaches the threshold —
    the common batch — and narrows the read otherwise.
    Returns the ids of the new MQLs.
    """
    entries = list(entries)
    gained = {e.contact_id for e in entries if e.points > 0}
    if not gained:
        return []
    conf = ScoringSettings.load()
    if scores is not None:
        gained = {c for c in gained if scores.get(c, conf.mql_threshold) >= conf.mql_threshold}
        if not gained:
            return []
    found = _candidates(ids_q("pk", sorted(gained)), conf=conf)
    candidates = {row["pk"]: row["score"] for row in found}
    if not candidates:
        return []
    by_contact: dict[int, list[LedgerEntry]] = defaultdict(list)
    for e in entries:
        if e.contact_id in candidates:
            by_contact[e.contact_id].append(e)
    at_by_contact, activity_by_contact = {}, {}
    for contact_id, mine in by_contact.items():
        mine.sort(key=lambda e: (e.at, e.points))
        # The last rise to the threshold: a batch's losses are dated at their activities
        # too (a negative rule's visit), so the running score can reach the threshold,
        # fall below it and reach it again; the lead qualified at the last of those. A
        # contact already at the threshold before the batch is dated at its first entry.
        running = candidates[contact_id] - sum(e.points for e in mine)
        below = running < conf.mql_threshold
        crossing = mine[0]
        for e in mine:
            running += e.points
            if below and running >= conf.mql_threshold:
                crossing = e
            below = running < conf.mql_threshold
        at_by_contact[contact_id] = crossing.at
        if crossing.activity_id:
            activity_by_contact[contact_id] = crossing.activity_id
    return _move(found, at_by_contact, activity_by_contact, conf=conf)


def _candidates(contact_q: Q, *, conf: ScoringSettings) -> list[dict]:
    """Contacts of ``contact_q`` that may become MQLs now (stage, threshold, minimum fit),
    in id order, with what owner assignment and the notices read (``_ROW_FIELDS``).

    The callers hold the contacts' locks, and the stage-changed handlers change none of
    these fields, so the rows stay valid through the move.
    """
    qs = Contact.objects.filter(
        contact_q, stage__in=MQL_FROM, scorecard__score__gte=conf.mql_threshold
    ).order_by("pk")
    if conf.min_fit is None:
        return list(qs.values(*_ROW_FIELDS, **_ROW_VALUES))
    fit = (
        LedgerEntry.objects.filter(contact_id=OuterRef("pk"), rule__kind=Rule.Kind.FIT)
        .order_by()
        .values("contact_id")
        .annotate(s=Sum("points"))
        .values("s")
    )
    return [
        row
        for row in qs.annotate(fit=Coalesce(Subquery(fit), Value(0))).values(
            *_ROW_FIELDS, "fit", **_ROW_VALUES
        )
        if row.pop("fit") >= conf.min_fit
    ]


def _move(
    found: list[dict],
    at_by_contact: dict,
    activity_by_contact: dict,
    *,
    conf: ScoringSettings,
    notify: bool = True,
) -> list[int]:
    """Move the candidate rows to ``mql`` through crm.lifecycle (one bulk move), assign
    owners to the unowned and notify the owners; returns the new MQLs' ids.

    Owners are chosen first and written by lifecycle's stage UPDATE: ``stage`` and
    ``owner`` are both indexed, so writing them apart rewrote every new MQL's row and its
    index entries twice. The callers hold the candidates' locks and every candidate's
    stage allows the move, so each chosen owner goes to a contact that moves.
    """
    chosen = _owners_choose(found, conf=conf)
    released = [pk for pk, owner in chosen.items() if owner is None]
    transitions = lifecycle.stages_change_bulk(
        to_stage=Stage.MQL,
        at_by_contact=at_by_contact,
        by_system="scoring",
        reason_code="score_threshold",
        activity_by_contact=activity_by_contact,
        owner_by_contact={pk: owner for pk, owner in chosen.items() if owner is not None},
    )
    if released:
        Contact.objects.filter(pk__in=released).update(owner=None)
    new_mqls = [t.contact_id for t in transitions]
    moved = set(new_mqls)
    rows = [row for row in found if row["pk"] in moved]  # id order, as _rows reads them
    if notify:
        _notify(rows, chosen)
    return new_mqls


_ROW_FIELDS = (
    "pk",
    "country",
    "company__country",
    "company__industry",
    "company__size_band",
    "owner_id",
    "email",
    "first_name",
    "last_name",
)
_ROW_VALUES = {"score": F("scorecard__score")}


def _rows(contact_ids: Iterable[int]) -> list[dict]:
    """What assignment and the notices read about the new MQLs, in one query."""
    ids = sorted(contact_ids)
    if not ids:
        return []
    return list(
        Contact.objects.filter(pk__in=ids).order_by("pk").values(*_ROW_FIELDS, **_ROW_VALUES)
    )


def _sales_pool() -> list[tuple[int, str]]:
    """Active sales users that take leads, as (id, territory), in a stable order."""
    User = get_user_model()
    return list(
        User.objects.filter(is_active=True, groups__name=Role.SALES)
        .exclude(profile__accepts_leads=False)
        .order_by("pk")
        .values_list("pk", "profile__territory")
        .distinct()
    )


def owners_assign(*, contact_ids: Iterable[int]) -> dict[int, int]:
    """Give unowned contacts an owner: first matching assignment rule, else a sales user
    whose territory lists the contact's country, else round-robin over all sales users.

    The round-robin cursor lives in the settings row, locked for the assignment so
    concurrent workers never hand two leads to the same turn. One UPDATE for all.
    """
    return _assign(_rows(contact_ids), conf=ScoringSettings.load())


def _assign(rows: list[dict], *, conf: ScoringSettings) -> dict[int, int]:
    """Assign owners to the unowned ``rows`` (id order); returns ``{contact: owner}``."""
    chosen = _owners_choose(rows, conf=conf)
    _owners_set(chosen)
    return chosen


def _owners_choose(rows: list[dict], *, conf: ScoringSettings) -> dict[int, int | None]:
    """Owners for the ``rows`` (id order) without one that can take them, advancing the
    round-robin cursor; the caller writes them. ``None``: a row whose owner no longer
    takes leads and for whom no one else can be chosen — its owner is cleared.

    A recycled lead that qualifies again keeps its owner only if that user still takes
    leads: active, sales or admin, not opted out — else it is assigned like a new one (its
    notice and email must not go to someone who left or stopped taking leads).
    """
    kept = _owners_taking_leads({r["owner_id"] for r in rows} - {None})
    rows = [r for r in rows if r["owner_id"] not in kept]
    if not rows:
        return {}
    # A rule hands leads only to a user who still takes them (as a kept owner must): a rep
    # who opted out or left sales falls through to the territories and round-robin.
    rules = list(AssignmentRule.objects.filter(enabled=True, user__is_active=True))
    takers = _owners_taking_leads({r.user_id for r in rules})
    rules = [r for r in rules if r.user_id in takers]
    pool = _sales_pool()
    with transaction.atomic():
        cursor = (
            ScoringSettings.objects.select_for_update()
            .values_list("rr_position", flat=True)
            .get(pk=conf.pk)
        )
        start = cursor
        chosen: dict[int, int] = {}
        for row in rows:
            country = (row["country"] or row["company__country"] or "").upper()
            owner = next((r.user_id for r in rules if _rule_matches(r, row, country)), None)
            if owner is None and pool:
                local = [u for u, t in pool if country and country in _codes(t)]
                candidates = local or [u for u, _ in pool]
                owner = candidates[cursor % len(candidates)]
                cursor += 1
            # None: the previous owner no longer takes leads and nobody else can — the
            # lead is released to the team's unassigned queue rather than left with them.
            if owner is not None or row["owner_id"] is not None:
                chosen[row["pk"]] = owner
        if cursor != start:
            ScoringSettings.objects.filter(pk=conf.pk).update(rr_position=cursor)
    return chosen


def _owners_taking_leads(user_ids: set[int]) -> set[int]:
    """Which of ``user_ids`` may still own a lead."""
    if not user_ids:
        return set()
    return set(
        get_user_model()
        .objects.filter(pk__in=user_ids, is_active=True)
        .filter(Q(groups__name__in=[Role.SALES, Role.ADMIN]) | Q(is_superuser=True))
        .exclude(profile__accepts_leads=False)
        .values_list("pk", flat=True)
    )


# PostgreSQL: one UPDATE joined to unnest()ed ids and owners (no CASE per owner of id lists).
_OWNERS_SQL = (
    "UPDATE crm_contact SET owner_id = v.o FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, o) "
    "WHERE crm_contact.id = v.id"
)


def _owners_set(chosen: dict[int, int]) -> None:
    if not chosen:
        return
    ids = sorted(chosen)  # id order: concurrent writers lock rows in the same order
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_OWNERS_SQL, [int_array(ids), int_array(chosen[i] for i in ids)])
        return
    by_owner: dict[int, list[int]] = defaultdict(list)
    for contact_id in ids:
        by_owner[chosen[contact_id]].append(contact_id)
    Contact.objects.filter(pk__in=ids).update(
        owner_id=Case(*[When(pk__in=part, then=Value(owner)) for owner, part in by_owner.items()])
    )


def _codes(territory: str | None) -> set[str]:
    return {c.strip().upper() for c in (territory or "").split(",") if c.strip()}


def _rule_matches(rule: AssignmentRule, row: dict, country: str) -> bool:
    countries = rule.country_list()
    if countries and country not in countries:
        return False
    if rule.industry and (row["company__industry"] or "").lower() != rule.industry.lower():
        return False
    return not (rule.size_band and row["company__size_band"] != rule.size_band)


def owners_notify(*, contact_ids: Iterable[int]) -> None:
    """An in-app notice per new MQL (one bulk insert), a pending owner email per new MQL
    (another), and once the hand-off commits ONE task for the whole batch that emails each
    owner the list of their new leads."""
    _notify(_rows(contact_ids), {})


def _notify(rows: list[dict], chosen: dict[int, int | None]) -> None:
    owned = [(r, chosen[r["pk"]] if r["pk"] in chosen else r["owner_id"]) for r in rows]
    owned = [(r, owner) for r, owner in owned if owner is not None]
    if not owned:
        return
    Notification.objects.bulk_create(
        [
            Notification(
                user_id=owner,
                text=f"New MQL: {_name(r)} (score {r['score']})"[:300],
                url=f"/crm/contacts/{r['pk']}/",
            )
            for r, owner in owned
        ]
    )
    # The emails are owed from this commit on: the rows commit or roll back with the
    # hand-off, and stay until each owner's mail has gone out.
    PendingOwnerEmail.objects.bulk_create(
        [PendingOwnerEmail(owner_id=owner, contact_id=r["pk"]) for r, owner in owned]
    )
    ids = [r["pk"] for r, _ in owned]
    # Mail leaves only once the hand-off is committed: a rolled-back batch sends nothing.
    transaction.on_commit(partial(_enqueue_owner_emails, ids), robust=True)


def _enqueue_owner_emails(contact_ids: list[int]) -> None:
    from .tasks import mql_owners_email

    try:
        mql_owners_email.delay(contact_ids)
    except Exception:
        # The hand-off is committed (and may be one of a drain's batches, whose commit must
        # not look failed): the emails stay pending for the minute's sweep.
        log.warning(
            "owner emails of %s new MQLs could not be queued; the minute's sweep sends them "
            "(scoring.tasks.owner_emails_sweep)",
            len(contact_ids),
            exc_info=True,
        )


def owner_emails_send(
    *, contact_ids: Iterable[int] | None = None, older_than: timedelta | None = None
) -> int:
    """Email each owner one message listing their new MQLs whose email is pending — those
    of ``contact_ids`` (the hand-off's task), or all of those pending for ``older_than``
    (the sweep). Returns the messages sent.

    The rows are claimed first, so the task and the sweep never both send one. Each
    owner's message goes on its own, and its rows are deleted as soon as it is out: when
    the mail server fails for some owners, the others' mail is not sent again by the retry,
    and the failed rows are released for it. The last mail error is raised once every owner
    was tried (the task retries with back-off: crm.mail_tasks).
    """
    token = _owner_emails_claim(contact_ids=contact_ids, older_than=older_than)
    try:
        return _owner_emails_deliver(token)
    finally:
        # What is still claimed failed (or was never reached): free for the next try.
        PendingOwnerEmail.objects.filter(claim=token).update(claim="", claimed_until=None)


def owner_emails_give_up(*, now=None) -> int:
    """Drop the pending owner emails older than ``OWNER_EMAIL_GIVE_UP_AFTER`` (not claimed
    right now), with an error logged per owner; returns how many were dropped."""
    now = now or timezone.now()
    stale = PendingOwnerEmail.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
        created_at__lt=now - OWNER_EMAIL_GIVE_UP_AFTER,
    )
    for owner, count in (
        stale.order_by()
        .values_list("owner__email")
        .annotate(n=Count("pk"))
        .order_by("owner__email")
    ):
        log.error(
            "gave up emailing %s about %s new MQLs, pending for over %s; the in-app notices remain",
            owner,
            count,
            OWNER_EMAIL_GIVE_UP_AFTER,
        )
    return stale.delete()[0]


def _owner_emails_claim(*, contact_ids: Iterable[int] | None, older_than: timedelta | None) -> str:
    """Claim the pending rows nobody holds (a claim lapses after its lease); one UPDATE,
    so concurrent claimers split the rows. Returns the claim's token."""
    now = timezone.now()
    token = uuid.uuid4().hex
    free = PendingOwnerEmail.objects.filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )
    if contact_ids is not None:
        free = free.filter(contact_id__in=list(contact_ids))
    if older_than is not None:
        free = free.filter(created_at__lte=now - older_than)
    free.update(claim=token, claimed_until=now + OWNER_EMAIL_LEASE)
    return token


def _owner_emails_deliver(token: str) -> int:
    rows = list(
        PendingOwnerEmail.objects.filter(claim=token)
        .order_by("contact_id", "pk")
        .values(
            "pk",
            "owner__email",
            "contact_id",
            "contact__email",
            "contact__first_name",
            "contact__last_name",
            score=F("contact__scorecard__score"),
        )
    )
    per_owner: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        per_owner[r["owner__email"]].append(r)
    # An owner without an email address gets the in-app notice only.
    PendingOwnerEmail.objects.filter(pk__in=[r["pk"] for r in per_owner.pop("", [])]).delete()
    if not per_owner:
        return 0
    sent, error = 0, None
    with get_connection() as mail:
        for email, leads in per_owner.items():
            try:
                mail.send_messages([_owner_message(email, leads)])
            except MAIL_ERRORS as exc:
                log.warning("new-MQL email to %s failed: %s", email, exc)
                error = exc
                continue
            PendingOwnerEmail.objects.filter(pk__in=[r["pk"] for r in leads]).delete()
            sent += 1
    if error is not None:
        raise error
    return sent


def _owner_message(email: str, leads: list[dict]) -> EmailMessage:
    return EmailMessage(
        subject=f"{len(leads)} new MQL(s) assigned to you",
        body="These leads reached the MQL threshold and are yours to work:\n\n"
        + "\n".join(
            f"- {_name(_contact_fields(r))} (score {r['score']}): "
            f"{settings.SITE_URL}/crm/contacts/{r['contact_id']}/"
            for r in leads
        ),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[email],
    )


def _contact_fields(row: dict) -> dict:
    return {k.removeprefix("contact__"): v for k, v in row.items()}


def _name(row: dict) -> str:
    return f"{row['first_name']} {row['last_name']}".strip() or row["email"]
