"""MQL hand-off: threshold crossings → ``mql`` through crm.lifecycle, owners, notices."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mass_mail
from django.db import transaction
from django.db.models import Case, Sum, Value, When

from crm import lifecycle
from crm.models import Contact, Notification, Stage
from crm.roles import Role

from .models import AssignmentRule, LedgerEntry, Rule, ScoringSettings

MQL_FROM = (Stage.LEAD, Stage.RECYCLED)  # a contact already past mql is never pulled back


def mqls_hand_off(
    *, entries: Iterable[LedgerEntry], scores: dict[int, int] | None = None
) -> list[int]:
    """Move contacts that these new entries pushed over the threshold to ``mql``.

    Dated at the entry (activity) that pushed each contact over; one query for the
    candidates, one for fit totals when a minimum fit is set, then lifecycle's bulk move,
    owner assignment and notices. ``scores`` (new scores known by the caller) lets it skip
    the candidate query when no contact reaches the threshold — the common batch.
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
    candidates = dict(
        Contact.objects.filter(
            pk__in=gained, stage__in=MQL_FROM, score__gte=conf.mql_threshold
        ).values_list("pk", "score")
    )
    if not candidates:
        return []
    if conf.min_fit is not None:
        fit = dict(
            LedgerEntry.objects.filter(contact_id__in=list(candidates), rule__kind=Rule.Kind.FIT)
            .order_by()
            .values_list("contact_id")
            .annotate(s=Sum("points"))
        )
        candidates = {c: s for c, s in candidates.items() if fit.get(c, 0) >= conf.min_fit}
    by_contact: dict[int, list[LedgerEntry]] = defaultdict(list)
    for e in entries:
        if e.contact_id in candidates:
            by_contact[e.contact_id].append(e)
    at_by_contact, activity_by_contact = {}, {}
    for contact_id, mine in by_contact.items():
        mine.sort(key=lambda e: (e.at, e.points))
        running = candidates[contact_id] - sum(e.points for e in mine)
        crossing = mine[-1]
        for e in mine:
            running += e.points
            if running >= conf.mql_threshold:
                crossing = e
                break
        at_by_contact[contact_id] = crossing.at
        if crossing.activity_id:
            activity_by_contact[contact_id] = crossing.activity_id
    transitions = lifecycle.stages_change_bulk(
        to_stage=Stage.MQL,
        at_by_contact=at_by_contact,
        by_system="scoring",
        reason_code="score_threshold",
        activity_by_contact=activity_by_contact,
    )
    new_mqls = [t.contact_id for t in transitions]
    owners_assign(contact_ids=new_mqls)
    owners_notify(contact_ids=new_mqls)
    return new_mqls


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
    rows = list(
        Contact.objects.filter(pk__in=list(contact_ids), owner__isnull=True)
        .order_by("pk")
        .values("pk", "country", "company__country", "company__industry", "company__size_band")
    )
    if not rows:
        return {}
    rules = list(AssignmentRule.objects.filter(enabled=True, user__is_active=True))
    pool = _sales_pool()
    with transaction.atomic():
        conf = ScoringSettings.objects.select_for_update().get(pk=ScoringSettings.load().pk)
        cursor = conf.rr_position
        chosen: dict[int, int] = {}
        for row in rows:
            country = (row["country"] or row["company__country"] or "").upper()
            owner = next((r.user_id for r in rules if _rule_matches(r, row, country)), None)
            if owner is None and pool:
                local = [u for u, t in pool if country and country in _codes(t)]
                candidates = local or [u for u, _ in pool]
                owner = candidates[cursor % len(candidates)]
                cursor += 1
            if owner is not None:
                chosen[row["pk"]] = owner
        ScoringSettings.objects.filter(pk=conf.pk).update(rr_position=cursor)
        by_owner: dict[int, list[int]] = defaultdict(list)
        for contact_id, owner in chosen.items():
            by_owner[owner].append(contact_id)
        if chosen:
            Contact.objects.filter(pk__in=list(chosen)).update(
                owner_id=Case(
                    *[When(pk__in=ids, then=Value(owner)) for owner, ids in by_owner.items()]
                )
            )
    return chosen


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
    """An in-app notice per new MQL, and one email per owner after the commit."""
    rows = list(
        Contact.objects.filter(pk__in=list(contact_ids), owner__isnull=False).values(
            "pk", "email", "first_name", "last_name", "score", "owner_id", "owner__email"
        )
    )
    if not rows:
        return
    Notification.objects.bulk_create(
        [
            Notification(
                user_id=r["owner_id"],
                text=f"New MQL: {_name(r)} (score {r['score']})"[:300],
                url=f"/crm/contacts/{r['pk']}/",
            )
            for r in rows
        ]
    )
    per_owner: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["owner__email"]:
            per_owner[r["owner__email"]].append(r)
    messages = [
        (
            f"{len(leads)} new MQL(s) assigned to you",
            "These leads reached the MQL threshold and are yours to work:\n\n"
            + "\n".join(
                f"- {_name(r)} (score {r['score']}): {settings.SITE_URL}/crm/contacts/{r['pk']}/"
                for r in leads
            ),
            settings.DEFAULT_FROM_EMAIL,
            [email],
        )
        for email, leads in per_owner.items()
    ]
    # Mail leaves only once the hand-off is committed: a rolled-back batch sends nothing.
    transaction.on_commit(lambda: send_mass_mail(messages, fail_silently=True))


def _name(row: dict) -> str:
    return f"{row['first_name']} {row['last_name']}".strip() or row["email"]
