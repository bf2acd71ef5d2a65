"""Demo data for the CRM core and the context shared by every app's seeder."""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import Exists, OuterRef, Q, Subquery
from django.utils import timezone

from . import bulkload, lifecycle
from . import demo_story as story
from .models import (
    Activity,
    ActivityKind,
    Campaign,
    CampaignCost,
    Company,
    Contact,
    Deal,
    EmailStatus,
    LifecycleTransition,
    RejectionReason,
    Reopening,
    Source,
)
from .models.activities import global_unsubscribe_q
from .models.choices import EMAIL_KINDS
from .roles import Role

# The demo log-ins printed by `make run`. Demo only: never use these in production.
DEMO_PASSWORD = "leadcycle-demo"
DEMO_USERS = [
    # username, role, first name, last name
    ("marketing", Role.MARKETING, "Maya", "Marketer"),
    ("sales", Role.SALES, "Sam", "Seller"),
    ("admin", Role.ADMIN, "Ada", "Admin"),
    ("sales2", Role.SALES, "Sasha", "Closer"),
]

CHUNK = 10_000  # contacts generated and loaded per transaction (bounds memory)
# Up to this many contacts the seeders replay the year's history (the score ledger week
# by week, segment membership week by week): seconds at the default 2,000, but ~50 passes
# over the activities, far too slow for the benchmarks' million (``seed_demo --history``
# forces it either way).
HISTORY_REPLAY_MAX = 20_000
REJECTION_REASONS = [
    # code, label, outcome: the same rows as migration crm 0004
    ("no_budget", "No budget", "recycled"),
    ("bad_timing", "Bad timing", "recycled"),
    ("no_project", "No project yet", "recycled"),
    ("no_authority", "No authority", "recycled"),
    ("bad_fit", "Bad fit", "disqualified"),
    ("wrong_contact", "Wrong contact", "disqualified"),
    ("duplicate", "Duplicate", "disqualified"),
    ("competitor", "Competitor", "disqualified"),
]
CAMPAIGNS = [
    # name, channel, type, first and last day (from the year's start; None: ongoing),
    # budget, goal action
    ("Onboarding drip", "email", "onboarding", 0, None, 15_000, "demo_requested"),
    ("Webinar follow-up", "email", "nurture", 190, None, 6_000, "demo_requested"),
    ("Q3 Webinar: Data Security", "webinar", "promotion", 150, 195, 20_000, "webinar_attended"),
    ("Paid search – Brand", "paid", "awareness", 0, None, 90_000, "landing_page_conversion"),
    ("LinkedIn Ads", "social", "promotion", 60, 300, 60_000, "landing_page_conversion"),
    ("Whitepaper: State of Fintech", "content", "promotion", 100, None, 25_000, "content_download"),
    ("Trade show Berlin", "event", "promotion", 200, 262, 45_000, "event_attended"),
    ("Recycle – Not ready", "email", "recycle", 0, None, 8_000, "demo_requested"),
    ("Newsletter", "email", "newsletter", 0, None, 10_000, "page_visit"),
    ("Customer anniversary", "email", "other", 30, None, 5_000, "purchase"),
]
# When campaign-driven activities happen (days from the year's start), matching CAMPAIGNS.
WINDOWS = story.Windows(
    webinar=(150, 190),
    trade_show=(200, 250),
    linkedin=(60, 300),
    whitepaper=(100, 365),
    anniversary_from=30,
    follow_up_from=190,
)
# Monthly variable and own costs per campaign: (category, amount per month).
COST_PLAN = {
    "Onboarding drip": [("content", 600)],
    "Webinar follow-up": [("content", 400)],
    "Q3 Webinar: Data Security": [("media", 3_000), ("content", 2_500), ("technology", 400)],
    "Paid search – Brand": [("media", 7_000)],
    "LinkedIn Ads": [("media", 5_500), ("content", 800)],
    "Whitepaper: State of Fintech": [("content", 1_500), ("media", 1_200)],
    "Trade show Berlin": [("media", 14_000), ("content", 2_000)],
    "Recycle – Not ready": [("content", 300)],
    "Newsletter": [("content", 900)],
    "Customer anniversary": [("content", 250)],
}
# Sources for which a campaign brought the contact (ingest's first-touch rule applies).
CAMPAIGN_SOURCES = [Source.WEB_FORM, Source.PAID, Source.SOCIAL, Source.EVENT]
LANGUAGES = {"DE": "de", "FR": "fr", "ES": "es", "IT": "it", "NL": "nl", "SE": "sv", "BR": "pt"}
EMAIL_FIRST = [re.sub(r"[^a-z0-9-]", "", n.lower()) for n in story.FIRST_NAMES]
EMAIL_LAST = [re.sub(r"[^a-z0-9-]", "", n.lower()) for n in story.LAST_NAMES]
CONTACT_FIELDS = [
    "id", "email", "first_name", "last_name", "job_title", "phone", "company", "country",
    "timezone", "source", "owner", "stage", "stage_changed_at", "recycle_round",
    "email_status", "consent_basis", "consent_given_at", "consent_source", "attributes",
    "created_suppressed", "created_at", "updated_at",
]  # fmt: skip
ACTIVITY_FIELDS = [
    "id", "contact", "kind", "occurred_at", "recorded_at", "campaign", "external_id",
    "message_id", "url", "is_machine", "details",
]  # fmt: skip


@dataclass
class SeedContext:
    """What seeders share: the random source, the size, the users and what earlier seeders made."""

    seed: int
    contacts: int
    users: dict[str, Any]
    stdout: Any = None
    now: datetime = field(default_factory=timezone.now)
    shared: dict[str, Any] = field(default_factory=dict)
    # Replay the history (dated ledger, segment joins and leaves) or only set the current
    # state at ``now``; None: replay up to HISTORY_REPLAY_MAX contacts.
    history: bool | None = None

    def __post_init__(self):
        if self.history is None:
            self.history = self.contacts <= HISTORY_REPLAY_MAX
        self.rng = random.Random(self.seed)
        # A year of history ending now, on a stable day boundary so reruns line up.
        self.start = (self.now - timedelta(days=365)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )

    def log(self, message: str) -> None:
        if self.stdout:
            self.stdout.write(f"  {message}")


def ensure_demo_users() -> dict[str, Any]:
    """Create (or keep) one demo user per role and return them by user name."""
    User = get_user_model()
    users = {}
    for username, role, first, last in DEMO_USERS:
        user, created = User.objects.get_or_create(
            username=username,
            defaults={
                "first_name": first,
                "last_name": last,
                "email": f"{username}@leadcycle.example",
            },
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.is_staff = role == Role.ADMIN
            user.is_superuser = role == Role.ADMIN
            user.save()
        user.groups.add(Group.objects.get(name=role))
        users[username] = user
    return users


def seed(ctx: SeedContext) -> None:
    """Companies, contacts, campaigns with costs, a year of activity, history and deals.

    Activities are loaded directly, without the per-batch "activities recorded" handlers,
    and history through :func:`crm.lifecycle.history_import_bulk` (no events): the later
    seeders rebuild scores, segments and rollups set-based. The ingest rules that matter
    for the data itself (suppression, first touch) are applied set-based here.
    Leaves in ``ctx.shared``: ``campaigns`` (name → Campaign) and ``contact_id_range``.
    """
    started = time.monotonic()
    users = ctx.users
    reasons_ensure()
    campaigns = campaigns_create(ctx)
    ctx.shared["campaigns"] = campaigns
    companies = companies_create(ctx)
    ctx.log(f"{len(campaigns)} campaigns with costs, {len(companies)} companies")
    first_id = contacts_create(ctx, companies=companies, campaigns=campaigns, users=users)
    ctx.shared["contact_id_range"] = (first_id, first_id + ctx.contacts - 1)
    bulkload.sequences_reset(Company, Contact, Activity, LifecycleTransition)
    ctx.log(f"crm demo data done in {time.monotonic() - started:.0f} s")


def reasons_ensure() -> None:
    """The MQL rejection reasons (normally created by migration 0004; kept here for safety)."""
    for position, (code, label, outcome) in enumerate(REJECTION_REASONS, start=1):
        RejectionReason.objects.get_or_create(
            code=code, defaults={"label": label, "outcome": outcome, "position": position}
        )


def campaigns_create(ctx: SeedContext) -> dict[str, Campaign]:
    """The campaigns of the year and their monthly costs, shared costs split across them."""
    today = ctx.now.date()
    year_start = ctx.start.date()
    campaigns: dict[str, Campaign] = {}
    for name, channel, type_, first_day, last_day, budget, goal in CAMPAIGNS:
        start = year_start + timedelta(days=first_day)
        end = year_start + timedelta(days=last_day) if last_day is not None else None
        campaigns[name] = Campaign.objects.create(
            name=name,
            channel=channel,
            type=type_,
            status=Campaign.Status.COMPLETED if end and end < today else Campaign.Status.ACTIVE,
            start_date=start,
            end_date=end,
            budget=Decimal(budget),
            owner=ctx.users["marketing"],
            goal_action=goal,
        )
    rng = ctx.rng
    costs: list[CampaignCost] = []
    shared: list[tuple[CampaignCost, list[Campaign]]] = []
    month = year_start.replace(day=1)
    while month <= today:
        nxt = (month + timedelta(days=32)).replace(day=1)
        lo, hi = max(month, year_start), min(nxt - timedelta(days=1), today)
        running = [
            c
            for c in campaigns.values()
            if c.start_date <= hi and (c.end_date is None or c.end_date >= lo)
        ]
        for c in running:
            for category, monthly in COST_PLAN[c.name]:
                amount = Decimal(monthly * rng.uniform(0.8, 1.2) * ((hi - lo).days + 1) / 30.4)
                costs.append(
                    CampaignCost(
                        campaign=c,
                        period_start=max(lo, c.start_date),
                        period_end=min(hi, c.end_date or hi),
                        amount=amount.quantize(Decimal("0.01")),
                        category=category,
                        note=f"{CampaignCost.Category(category).label} {lo:%b %Y}",
                    )
                )
        email = [c for c in running if c.channel == "email"]
        days = (hi - lo).days + 1
        for category, amount, split, among, note in (
            ("labour", 16_000, "equal", running, "Marketing team time"),
            ("technology", 2_400, "emails_sent", email, "Marketing automation platform"),
        ):
            entry = CampaignCost(
                campaign=among[0],
                period_start=lo,
                period_end=hi,
                amount=Decimal(amount * days / 30.4).quantize(Decimal("0.01")),
                category=category,
                shared=True,
                split=split,
                note=f"{note}, {lo:%b %Y} (shared)",
            )
            costs.append(entry)
            shared.append((entry, among[1:]))
        month = nxt
    CampaignCost.objects.bulk_create(costs)
    through = CampaignCost.shared_with.through
    through.objects.bulk_create(
        [through(campaigncost_id=e.pk, campaign_id=c.pk) for e, others in shared for c in others]
    )
    return campaigns


def companies_create(ctx: SeedContext) -> list[tuple]:
    """About one company per eight contacts; returns (id, name, domain, country, salt) rows."""
    rng = ctx.rng
    count = max(12, ctx.contacts // 8)
    first = bulkload.next_id(Company)
    owners = [ctx.users["sales"].pk, ctx.users["sales2"].pk, None, None, None]
    salts = {industry: rng.randrange(10**6) for industry in story.INDUSTRY_WORDS}
    heads, tails = len(story.NAME_HEADS), len(story.NAME_TAILS)
    combos = heads * tails * 5  # name head × tail × industry word
    made = dict.fromkeys(story.INDUSTRY_WORDS, 0)
    rows, out = [], []
    for i in range(count):
        industry = story.INDUSTRY(rng)
        # The k-th company of an industry takes combination (salt + k·step) mod combos: a
        # bijection, so names and domains never repeat; past all of them a number is added.
        k = made[industry]
        made[industry] += 1
        combo = (salts[industry] + k * story.PAIR_STEP) % combos
        head, tail = story.NAME_HEADS[combo % heads], story.NAME_TAILS[combo // heads % tails]
        word = story.INDUSTRY_WORDS[industry][combo // (heads * tails)]
        round_ = k // combos
        name = f"{head}{tail} {word}" + (f" {round_ + 1}" if round_ else "")
        domain = f"{head}{tail}-{word}{round_ or ''}.example".lower()
        country = story.COUNTRY(rng)
        created = ctx.start - story.DAY * rng.uniform(30, 3000)
        cid = first + i
        rows.append(
            (
                cid,
                name,
                domain,
                industry,
                story.SIZE_BAND(rng),
                country,
                owners[rng.randrange(5)],
                created,
                ctx.now,
            )
        )
        out.append((cid, name, domain, country, rng.randrange(story.PAIRS)))
    bulkload.rows_load(
        model=Company,
        fields=[
            "id",
            "name",
            "domain",
            "industry",
            "size_band",
            "country",
            "owner",
            "created_at",
            "updated_at",
        ],
        rows=rows,
    )
    return out


def contacts_create(ctx: SeedContext, *, companies: list[tuple], campaigns, users) -> int:
    """Contacts with their year of activity, history, re-openings and deals, chunk by chunk.

    Each chunk is generated in memory, then loaded with ``COPY`` (PostgreSQL) or
    ``bulk_create`` in one transaction, so memory stays bounded whatever ``ctx.contacts``.
    Returns the first contact id (ids are consecutive).
    """
    rng, n = ctx.rng, ctx.contacts
    first_contact = bulkload.next_id(Contact)
    next_activity = bulkload.next_id(Activity)
    camp = {name: c.pk for name, c in campaigns.items()}
    user_ids = {name: u.pk for name, u in users.items()}
    per_company = [0] * len(companies)
    per_free = [0] * len(story.FREE_MAIL)
    span = (ctx.now - ctx.start).total_seconds() * 0.999
    started = time.monotonic()
    total_activities = 0
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        contact_rows, activity_rows, history, reopenings, deals = [], [], [], [], []
        for i in range(lo, hi):
            cid = first_contact + i
            # Growth: creation density rises linearly to 3× over the year (inverse CDF of 1+2x);
            # ids follow creation time as they would in a real database.
            x = (math.sqrt(1 + 8 * (i + rng.random()) / n) - 1) / 2
            created = ctx.start + timedelta(seconds=x * span)
            if rng.random() < 0.06:
                f = rng.randrange(len(story.FREE_MAIL))
                company, domain, salt, k = None, story.FREE_MAIL[f], 7919 * f, per_free[f]
                per_free[f] += 1
                country = story.COUNTRY(rng)
            else:
                c = int(len(companies) * rng.random() ** 1.5)  # a few companies have many
                company, k = companies[c], per_company[c]
                per_company[c] += 1
                domain, salt = company[2], company[4]
                country = company[3] if rng.random() < 0.85 else story.COUNTRY(rng)
            # The k-th person at a domain gets name pair (salt + k·step) mod PAIRS: unique.
            pair = (salt + k * story.PAIR_STEP) % story.PAIRS
            fi, li = pair % len(story.FIRST_NAMES), pair // len(story.FIRST_NAMES)
            repeat = k // story.PAIRS
            email = f"{EMAIL_FIRST[fi]}.{EMAIL_LAST[li]}{repeat or ''}@{domain}"
            title, propensity = story.TITLE(rng)
            source = story.SOURCE(rng)
            consent = story.CONSENT(rng)
            st = story.story_make(
                rng,
                created=created,
                now=ctx.now,
                start=ctx.start,
                propensity=propensity,
                source=source,
                win=WINDOWS,
                forced=story.SHOWCASE[i] if i < len(story.SHOWCASE) else None,
            )
            ids: dict[int, int] = {}
            acts = st.activities
            for j in sorted((j for j in range(len(acts)) if acts[j]), key=lambda j: acts[j][0]):
                at, kind, campaign, url, details = acts[j]
                ids[j] = next_activity
                message = f"<newsletter-{cid}@leadcycle.example>" if kind in EMAIL_KINDS else ""
                activity_rows.append(
                    (next_activity, cid, kind, at, at, camp.get(campaign), None, message, url,
                     False, details)
                )  # fmt: skip
                next_activity += 1
            for stage, at, user, system, reason, link in st.steps:
                history.append(
                    {
                        "contact_id": cid,
                        "to_stage": stage,
                        "at": at,
                        "by_user_id": user_ids.get(user),
                        "by_system": system if not user else "",
                        "reason_code": reason,
                        "activity_id": ids.get(link),
                    }
                )
            reopenings.extend(
                Reopening(contact_id=cid, recycle_round=r, at=at, activity_id=ids[j])
                for r, at, j in st.reopenings
            )
            attributes = _attributes(rng, st, country)
            if st.deal:
                opened, status, closed, amount, lost = st.deal
                deals.append(
                    Deal(
                        contact_id=cid,
                        company_id=company[0] if company else None,
                        name=f"{company[1] if company else 'Self-serve'} – {attributes['plan']}",
                        amount=Decimal(amount).quantize(Decimal("0.01")),
                        status=status,
                        owner_id=user_ids.get(st.owner),
                        created_at=opened,
                        closed_at=closed,
                        lost_reason=lost,
                    )
                )
            phone = (
                f"+{story.DIAL[country]} {rng.randrange(20, 999)} {rng.randrange(10**5, 10**7)}"
                if rng.random() < 0.5
                else ""
            )
            contact_rows.append(
                (cid, email, story.FIRST_NAMES[fi], story.LAST_NAMES[li], title, phone,
                 company[0] if company else None, country, story.TIME_ZONES[country], source,
                 user_ids.get(st.owner), "lead", created, 0, "active", consent,
                 created if consent != "none" else None, story.CONSENT_SOURCE[source],
                 story._js(attributes), consent == "none", created, ctx.now)
            )  # fmt: skip
        with transaction.atomic():
            bulkload.rows_load(model=Contact, fields=CONTACT_FIELDS, rows=contact_rows)
            bulkload.rows_load(model=Activity, fields=ACTIVITY_FIELDS, rows=activity_rows)
            lifecycle.history_import_bulk(rows=history, by_system="demo")
            Reopening.objects.bulk_create(reopenings, batch_size=2000)
            Deal.objects.bulk_create(deals, batch_size=2000)
            ingest_rules_apply_bulk(id_from=first_contact + lo, id_to=first_contact + hi - 1)
        total_activities += len(activity_rows)
        rate = hi / max(time.monotonic() - started, 1e-6)
        ctx.log(f"{hi:,}/{n:,} contacts, {total_activities:,} activities ({rate:,.0f} contacts/s)")
    return first_contact


def _attributes(rng, st: story.Story, country: str) -> dict:
    """Free custom attributes, as a CRM import would bring them (usable in segments)."""
    attributes: dict = {"language": LANGUAGES.get(country, "en")}
    if rng.random() < 0.6:
        attributes["birthday"] = f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if st.deal:
        amount = st.deal[3]
        attributes["plan"] = (
            "Starter" if amount < 20_000 else "Growth" if amount < 60_000 else "Enterprise"
        )
        if st.deal[1] == "won":
            attributes["renewal_date"] = (st.deal[2] + timedelta(days=365)).date().isoformat()
        elif st.deal[1] == "open":
            attributes["plan"] = "Trial"
    return attributes


def ingest_rules_apply_bulk(*, id_from: int, id_to: int) -> None:
    """Apply, set-based, the ``crm.ingest`` rules that bulk-loaded activities bypassed.

    For contacts with ids in [id_from, id_to]: unsubscribes, complaints and hard bounces
    suppress the address (``email_status`` from the earliest such event), and a contact
    whose source is a campaign channel was acquired by the campaign of its first
    campaign-tagged activity (first touch). Seeders that bulk-load email events (nurture)
    call this again for the contact id range in ``ctx.shared["contact_id_range"]``.
    """
    contacts = Contact.objects.filter(pk__gte=id_from, pk__lte=id_to)
    own = Activity.objects.filter(contact=OuterRef("pk"))
    for status, condition in (
        (EmailStatus.HARD_BOUNCED, Q(kind=ActivityKind.EMAIL_BOUNCED, details__bounce_type="hard")),
        (EmailStatus.COMPLAINED, Q(kind=ActivityKind.EMAIL_COMPLAINED)),
        (EmailStatus.UNSUBSCRIBED, global_unsubscribe_q()),  # not one program's only
    ):
        events = own.filter(condition)
        contacts.filter(Exists(events), email_status=EmailStatus.ACTIVE).update(
            email_status=status,
            email_status_changed_at=Subquery(
                events.order_by("occurred_at").values("occurred_at")[:1]
            ),
        )
    first_touch = own.filter(campaign__isnull=False).order_by("occurred_at", "id")
    contacts.filter(
        Exists(first_touch), acquired_by__isnull=True, source__in=CAMPAIGN_SOURCES
    ).update(acquired_by=Subquery(first_touch.values("campaign")[:1]))
