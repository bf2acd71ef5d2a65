"""MQL hand-off: threshold crossings → ``mql`` through crm.lifecycle, owners, notices."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from itertools import groupby
from operator import itemgetter

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

from .models import (
    AssignmentRule,
    LedgerEntry,
    PendingOwnerEmail,
    RoundRobinCursor,
    Rule,
    ScoringSettings,
)
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

    Dated when the contact's score, as its ledger tells it, reached the threshold
    (:func:`_crossings`). Two queries read the candidates (stage, score, when a minimum
    fit is set their fit total, and what owner assignment and the notices need) and
    their ledgers, then lifecycle's bulk move. ``scores`` (new scores known by the caller)
    lets it skip everything when no contact reaches the threshold — the common batch —
    and narrows the read otherwise.
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
    if not found:
        return []
    candidates = {row["pk"] for row in found}
    first_gain: dict[int, LedgerEntry] = {}
    for e in sorted(entries, key=lambda e: e.at):
        if e.points > 0 and e.contact_id in candidates:
            first_gain.setdefault(e.contact_id, e)
    crossing = _crossings(first_gain, threshold=conf.mql_threshold)
    at_by_contact = {c: at for c, (at, _) in crossing.items()}
    activity_by_contact = {c: a for c, (_, a) in crossing.items() if a}
    return _move(found, at_by_contact, activity_by_contact)


def _crossings(
    first_gain: dict[int, LedgerEntry], *, threshold: int
) -> dict[int, tuple[datetime, int | None]]:
    """``{contact: (when, activity)}``: when each candidate qualified, from its whole
    ledger (one query for all candidates).

    A contact's score at a moment is the sum of its entries up to then (METRICS.md
    "Scores over time"), so the new entries alone cannot date the crossing: a late,
    back-dated activity sits *before* entries already in the ledger. The crossing is the
    start of the stretch at or over the threshold the score is in now — the last moment
    the running sum rose to the threshold (a score can reach it, fall below and reach it
    again) — dated at the entry that took it there; but never before ``first_gain``, the
    contact's earliest gain among the new entries: a contact already over the threshold
    without having been handed off (a recycled lead kept over it, a minimum fit met only
    now, a merge) qualifies with the gain, not retroactively. (``crm.lifecycle`` dates it
    no earlier than the contact's last stage change either.)
    """
    rows = (
        LedgerEntry.objects.filter(ids_q("contact_id", sorted(first_gain)))
        .order_by("contact_id", "at", "pk")
        .values_list("contact_id", "at", "points", "activity_id")
    )
    rise: dict[int, tuple[datetime, int | None]] = {}
    for contact_id, ledger in groupby(rows, key=itemgetter(0)):
        running, below = 0, True
        for at, same_time in groupby(ledger, key=itemgetter(1)):
            same_time = list(same_time)
            running += sum(points for _, _, points, _ in same_time)
            if below and running >= threshold:
                activity = next((a for _, _, p, a in same_time if p > 0 and a), None)
                rise[contact_id] = (at, activity)
            below = running < threshold
        if below:  # not over it by the ledger (the caller's cache drifted): the gain
            rise.pop(contact_id, None)
    out = {}
    for contact_id, gain in first_gain.items():
        at, activity = rise.get(contact_id, (gain.at, None))
        out[contact_id] = (at, activity) if at > gain.at else (gain.at, gain.activity_id)
    return out


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
    return [
        row
        for row in qs.annotate(fit=fit_points()).values(*_ROW_FIELDS, "fit", **_ROW_VALUES)
        if row.pop("fit") >= conf.min_fit
    ]


def fit_points():
    """A contact's fit total (what the minimum fit compares), as an annotation."""
    fit = (
        LedgerEntry.objects.filter(contact_id=OuterRef("pk"), rule__kind=Rule.Kind.FIT)
        .order_by()
        .values("contact_id")
        .annotate(s=Sum("points"))
        .values("s")
    )
    return Coalesce(Subquery(fit), Value(0))


def _move(
    found: list[dict],
    at_by_contact: dict,
    activity_by_contact: dict,
    *,
    notify: bool = True,
) -> list[int]:
    """Move the candidate rows to ``mql`` through crm.lifecycle (one bulk move), assign
    owners to the unowned and notify the owners; returns the new MQLs' ids.

    Owners are chosen first and written by lifecycle's stage UPDATE: ``stage`` and
    ``owner`` are both indexed, so writing them apart rewrote every new MQL's row and its
    index entries twice. The callers hold the candidates' locks and every candidate's
    stage allows the move, so each chosen owner goes to a contact that moves.
    """
    chosen = _owners_choose(found)
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
    """Give unowned contacts an owner: first matching assignment rule, else round-robin
    among the sales users whose territory lists the contact's country, else round-robin
    over all sales users.

    Each pool has its own cursor (``RoundRobinCursor``), locked for the assignment so
    concurrent workers never hand two leads to the same turn. One UPDATE for all.
    """
    return _assign(_rows(contact_ids))


def _assign(rows: list[dict]) -> dict[int, int]:
    """Assign owners to the unowned ``rows`` (id order); returns ``{contact: owner}``."""
    chosen = _owners_choose(rows)
    _owners_set(chosen)
    return chosen


EVERYONE = ""  # the pool of a lead no territory covers: every sales user


def _owners_choose(rows: list[dict]) -> dict[int, int | None]:
    """Owners for the ``rows`` (id order) without one that can take them, advancing the
    round-robin cursor of each pool they are drawn from; the caller writes them.
    ``None``: a row whose owner no longer takes leads and for whom no one else can be
    chosen — its owner is cleared.

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
    sales = _sales_pool()
    # Per row: the rule's user, or the pool (key and members) it takes its turn in.
    plan: list[tuple[dict, int | None, str | None, list[int]]] = []
    for row in rows:
        country = (row["country"] or row["company__country"] or "").upper()
        owner = next((r.user_id for r in rules if _rule_matches(r, row, country)), None)
        if owner is not None or not sales:
            plan.append((row, owner, None, []))
            continue
        local = [u for u, t in sales if country and country in _codes(t)]
        if local:
            plan.append((row, None, country, local))
        else:
            plan.append((row, None, EVERYONE, [u for u, _ in sales]))
    chosen: dict[int, int | None] = {}
    with transaction.atomic():
        cursors = _cursors_lock({key for _, _, key, _ in plan if key is not None})
        for row, owner, key, members in plan:
            if key is not None:
                cursor = cursors[key]
                owner = members[cursor.position % len(members)]
                cursor.position += 1
            # None: the previous owner no longer takes leads and nobody else can — the
            # lead is released to the team's unassigned queue rather than left with them.
            if owner is not None or row["owner_id"] is not None:
                chosen[row["pk"]] = owner
        if cursors:
            RoundRobinCursor.objects.bulk_update(cursors.values(), ["position"])
    return chosen


def _cursors_lock(pools: set[str]) -> dict[str, RoundRobinCursor]:
    """The cursors of ``pools``, locked (in pool order, as every worker locks them) until
    the transaction ends; a pool's first lead creates its cursor at 0."""
    if not pools:
        return {}
    locked = RoundRobinCursor.objects.select_for_update().filter(pool__in=pools).order_by("pool")
    cursors = {c.pool: c for c in locked}
    if len(cursors) < len(pools):
        # Two workers may create the same pool's cursor at once: one insert is kept.
        missing = [RoundRobinCursor(pool=p) for p in sorted(pools - set(cursors))]
        RoundRobinCursor.objects.bulk_create(missing, ignore_conflicts=True)
        cursors = {c.pool: c for c in locked.all()}
    return cursors


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
