"""Day rows behind the cost-per-MQL and revenue reports (issue 8, METRICS.md lines 53,
62–70): what those reports would otherwise group from per-contact rows on every view.

* :class:`~reports.models.CampaignLeadDaily` — new leads per creation day × acquiring
  campaign (cost per new lead). ``Contact.acquired_by`` can change after creation (ingest
  sets it right after creating a contact, edits and imports change it), so a day is
  *recounted* from the contacts whenever one of its contacts is created or changes its
  acquisition: the day's row for campaign 0 (always 0 leads: a lock) is taken first, so two
  transactions recounting the same day run one after the other and the later one sees the
  earlier one's contacts.
* :class:`~reports.models.CreditDaily` — the ``TransitionCredit`` rows summed per day ×
  stage × campaign × ``n``. A change's credit to a campaign depends only on its shape
  (``n``, the campaign's ``touches``, first/last; see ``metrics.attribution``), and is a
  fraction whose denominator divides ``10·lcm(1..n)``; so changes with at most
  :data:`FOLD_N` touches fold into one row per day × stage × campaign (``n`` 0) holding
  their linear and U-shaped credits as exact integer numerators over
  :data:`DENOMINATOR`, and the few longer ones keep their ``n``. A year is a few thousand
  rows whatever the number of contacts, and every model's credit stays an exact
  ``Fraction``. Kept by signed deltas wherever credit rows are replaced
  (``reports.lifecycle_facts``), rebuilt and reconciled from the credit rows.
* :class:`~reports.models.SalesCycleFact` — per ``customer`` entry the latest ``sql``
  entry at or before it (sales cycle), recomputed per contact entering ``sql``/``customer``.
* :class:`~reports.models.WonDealFact` (kept by ``reports.deal_facts``) — per won deal
  whether a campaign touched its contact before the deal was created.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from datetime import timedelta
from fractions import Fraction
from math import lcm

from django.db import connection, transaction
from django.db.models import Count, F, Max, Q, Sum
from django.db.models.functions import TruncDate

from crm.events import handler
from crm.models import Contact, LifecycleTransition, Stage

from .fact_writes import counts_upsert
from .models import CampaignLeadDaily, CreditDaily, SalesCycleFact, TransitionCredit
from .query import day_start, site_tz
from .rollups import snapshot_diff

log = logging.getLogger(__name__)

FOLD_N = 28
# Every change credit with n ≤ FOLD_N is a multiple of 1/DENOMINATOR: linear t/n,
# U-shaped 1, (f+l)/2, 2/5·(f+l) + (t−f−l)/(5(n−2)). A sum stays in a signed 64-bit
# integer for up to 11 million changes (each credit ≤ 1).
DENOMINATOR = 10 * lcm(*range(1, FOLD_N + 1))
CREDIT_COLS = ["changes", "first", "last", "touches", "linear", "u_shaped"]
CREDIT_KEY = ["to_stage", "day", "campaign_id", "n"]
CHUNK = 2000


def _day(dt):
    return dt.astimezone(site_tz()).date()


def denominator(max_n: int) -> int:
    """A common denominator of every credit of changes with at most ``max_n`` touches."""
    return 10 * lcm(*range(1, max(max_n, FOLD_N) + 1))


def shape_numerators(n: int, t: int, f: int, lt: int, c: int, denom: int) -> tuple[int, int]:
    """Linear and U-shaped credit of summed shape figures with ``n`` touches (as
    ``attribution.shape_credit``), as numerators over ``denom`` (a :func:`denominator`)."""
    if n == 0:
        return c * denom, c * denom
    linear = t * denom // n
    if n == 1:
        return linear, f * denom
    if n == 2:
        return linear, (f + lt) * denom // 2
    return linear, 2 * (f + lt) * denom // 5 + (t - f - lt) * denom // (5 * (n - 2))


# --- CreditDaily ---------------------------------------------------------------------------


def _credit_key_counts(rows, sign: int, out: dict) -> None:
    """Add ``CREDIT_FIELDS`` tuples (transition, contact, to_stage, at, campaign_id,
    touches, n, first, last) to the day-row deltas ``out`` with ``sign``."""
    for _, _, stage, at, campaign_id, t, n, first, last in rows:
        f, lt = int(first), int(last)
        folded = n <= FOLD_N
        key = (str(stage), _day(at), campaign_id, 0 if folded else n)
        counts = out.setdefault(key, Counter())
        counts["changes"] += sign
        counts["first"] += sign * f
        counts["last"] += sign * lt
        counts["touches"] += sign * t
        if folded:
            lin, ush = shape_numerators(n, t, f, lt, 1, DENOMINATOR)
            counts["linear"] += sign * lin
            counts["u_shaped"] += sign * ush


def credit_daily_apply(*, old, new) -> None:
    """Replace the credit rows ``old`` by ``new`` in the day rows (one upsert)."""
    deltas: dict[tuple, Counter] = {}
    _credit_key_counts(old, -1, deltas)
    _credit_key_counts(new, 1, deltas)
    counts_upsert(CreditDaily, key=CREDIT_KEY, rows=deltas, fields=CREDIT_COLS)


def _credit_recount() -> dict[tuple, Counter]:
    """Day rows from the credit rows, grouped in the database by day × stage × campaign ×
    n and folded here (``n`` ≤ :data:`FOLD_N` into one row)."""
    out: dict[tuple, Counter] = {}
    rows = (
        TransitionCredit.objects.annotate(day=TruncDate("at", tzinfo=site_tz()))
        .values("to_stage", "day", "campaign_id", "n")
        .annotate(
            c=Count("id"),
            t=Sum("touches"),
            f=Count("id", filter=Q(first=True)),
            lt=Count("id", filter=Q(last=True)),
        )
        .values_list("to_stage", "day", "campaign_id", "n", "c", "t", "f", "lt")
        .order_by()
    )
    for stage, day, campaign_id, n, c, t, f, lt in rows:
        folded = n <= FOLD_N
        counts = out.setdefault((stage, day, campaign_id, 0 if folded else n), Counter())
        counts.update({"changes": c, "first": f, "last": lt, "touches": t})
        if folded:
            lin, ush = shape_numerators(n, t, f, lt, c, DENOMINATOR)
            counts.update({"linear": lin, "u_shaped": ush})
    return out


def _credit_stored() -> dict[tuple, Counter]:
    return {
        tuple(r[:4]): Counter({k: v for k, v in zip(CREDIT_COLS, r[4:], strict=True) if v})
        for r in CreditDaily.objects.values_list(*CREDIT_KEY, *CREDIT_COLS)
    }


def credit_daily_rebuild() -> None:
    rows = _credit_recount()
    with transaction.atomic():
        CreditDaily.objects.all().delete()
        CreditDaily.objects.bulk_create(
            [
                CreditDaily(**dict(zip(CREDIT_KEY, k, strict=True)), **counts)
                for k, counts in rows.items()
            ],
            batch_size=5000,
        )


# --- CampaignLeadDaily ---------------------------------------------------------------------


def _lock_day_sql() -> str:
    qn = connection.ops.quote_name
    table = qn(CampaignLeadDaily._meta.db_table)
    return (
        f"INSERT INTO {table} (day, campaign_id, new_leads) VALUES (%s, 0, 0) "  # noqa: S608
        f"ON CONFLICT (day, campaign_id) DO UPDATE SET new_leads = {table}.new_leads"
    )


def _leads_of(qs) -> dict[tuple, int]:
    """(day, campaign) → new leads of the contacts in ``qs`` acquired by a campaign, grouped
    in the database. (The rows of campaign 0 only serialise a day's recounts.)"""
    return {
        (day, campaign_id): n
        for day, campaign_id, n in qs.filter(created_suppressed=False, acquired_by__isnull=False)
        .annotate(day=TruncDate("created_at", tzinfo=site_tz()), camp=F("acquired_by_id"))
        .values("day", "camp")
        .annotate(n=Count("id"))
        .values_list("day", "camp", "n")
        .order_by()
    }


def campaign_leads_refresh(*, days, exclude=()) -> None:
    """Recount these creation days from the contacts (each: a lock on its campaign-0 row,
    one grouped count through the contacts' creation index, a delete and an insert).
    ``exclude``: contacts about to be deleted in this transaction (a merge's duplicate)."""
    for day in sorted(set(days)):
        with connection.cursor() as cursor:
            cursor.execute(_lock_day_sql(), [connection.ops.adapt_datefield_value(day)])
        counts = _leads_of(
            Contact.objects.filter(
                created_at__gte=day_start(day), created_at__lt=day_start(day + timedelta(days=1))
            ).exclude(pk__in=list(exclude))
        )
        CampaignLeadDaily.objects.filter(day=day).exclude(campaign_id=0).delete()
        CampaignLeadDaily.objects.bulk_create(
            [CampaignLeadDaily(day=d, campaign_id=c, new_leads=n) for (d, c), n in counts.items()]
        )


def campaign_leads_refresh_contacts(contact_ids) -> None:
    """Recount the creation days of these contacts (created, or acquisition changed)."""
    days = set()
    for chunk in _chunks(contact_ids):
        days |= {
            _day(at)
            for at in Contact.objects.filter(pk__in=chunk).values_list("created_at", flat=True)
        }
    campaign_leads_refresh(days=days)


def campaign_leads_rebuild() -> None:
    counts = _leads_of(Contact.objects.all())
    with transaction.atomic():
        CampaignLeadDaily.objects.all().delete()
        CampaignLeadDaily.objects.bulk_create(
            [CampaignLeadDaily(day=d, campaign_id=c, new_leads=n) for (d, c), n in counts.items()],
            batch_size=5000,
        )


# --- SalesCycleFact ------------------------------------------------------------------------


def _chunks(items, size=CHUNK):
    items = sorted(set(items))
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _cycle_rows(contact_ids) -> list[SalesCycleFact]:
    """Each customer entry of these contacts with its latest sql entry at or before it."""
    rows = []
    last_sql: dict[int, object] = {}
    for pk, contact_id, stage, at in (
        LifecycleTransition.objects.filter(
            contact_id__in=contact_ids, to_stage__in=[Stage.SQL, Stage.CUSTOMER]
        )
        # "sql" > "customer": an sql entry at the same time comes first (at ≤ at counts)
        .order_by("contact_id", "at", "-to_stage")
        .values_list("id", "contact_id", "to_stage", "at")
    ):
        if stage == Stage.SQL:
            last_sql[contact_id] = at
        elif contact_id in last_sql:
            rows.append(
                SalesCycleFact(
                    transition_id=pk, contact_id=contact_id, at=at, sql_at=last_sql[contact_id]
                )
            )
    return rows


def sales_cycle_refresh(*, contact_ids) -> None:
    """Recompute these contacts' sales-cycle rows (3 queries per 2,000 contacts)."""
    for chunk in _chunks(contact_ids):
        SalesCycleFact.objects.filter(contact_id__in=chunk).delete()
        SalesCycleFact.objects.bulk_create(_cycle_rows(chunk), batch_size=2000)


def sales_cycle_apply_transitions(transitions) -> None:
    """Stage changed: contacts entering ``sql`` or ``customer`` (no query otherwise)."""
    ids = {t.contact_id for t in transitions if t.to_stage in (Stage.SQL, Stage.CUSTOMER)}
    if ids:
        sales_cycle_refresh(contact_ids=ids)


def sales_cycle_snapshot(contact_ids) -> dict:
    return dict(
        SalesCycleFact.objects.filter(contact_id__in=contact_ids).values_list(
            "transition_id", "sql_at"
        )
    )


def sales_cycle_rebuild() -> None:
    top = Contact.objects.aggregate(m=Max("pk"))["m"] or 0
    with transaction.atomic():
        SalesCycleFact.objects.all().delete()
        for lo in range(0, top + 1, 20000):
            ids = LifecycleTransition.objects.filter(
                contact_id__gte=lo, contact_id__lt=lo + 20000, to_stage=Stage.CUSTOMER
            ).values("contact_id")
            SalesCycleFact.objects.bulk_create(_cycle_rows(ids), batch_size=5000)


# --- rebuild and reconciliation ------------------------------------------------------------


def credit_facts_rebuild() -> None:
    """Recompute every table of this module, the won-deal facts and the deal and CSAT day
    rows (demo seeding, migrations): after ``lifecycle_facts_rebuild`` (the credit rows
    it reads)."""
    from .csat_facts import csat_daily_rebuild
    from .deal_facts import deal_days_rebuild, won_deal_facts_rebuild

    csat_daily_rebuild()
    campaign_leads_rebuild()
    credit_daily_rebuild()
    sales_cycle_rebuild()
    won_deal_facts_rebuild()
    deal_days_rebuild()


def credit_facts_reconcile(*, contact_ids) -> dict:
    """Compare the day rows with a recount (repairing them) and recompute the sales-cycle
    rows of ``contact_ids`` (the day's, after their credit rows were rebuilt); returns the
    differences found. The won-deal facts are compared with the deal credits
    (``lifecycle_facts_reconcile`` rebuilds both through ``deal_credits_refresh``), the
    deal day rows with a recount of the credit rows (``reports.deal_facts``), the CSAT day
    rows with a recount of the answers (``reports.csat_facts``)."""
    stored_leads = {
        (d, c): n
        for d, c, n in CampaignLeadDaily.objects.exclude(new_leads=0).values_list(
            "day", "campaign_id", "new_leads"
        )
    }
    leads = snapshot_diff(stored_leads, _leads_of(Contact.objects.all()), "facts")
    if leads:
        campaign_leads_rebuild()
    credits = snapshot_diff(_credit_stored(), _credit_recount(), "facts")
    if credits:
        credit_daily_rebuild()
    cycle: dict = {}
    for chunk in _chunks(contact_ids):
        before = sales_cycle_snapshot(chunk)
        sales_cycle_refresh(contact_ids=chunk)
        cycle.update(snapshot_diff(before, sales_cycle_snapshot(chunk), "facts"))
    from .csat_facts import csat_daily_reconcile
    from .deal_facts import deal_days_reconcile

    diff = {
        "campaign_leads": leads,
        "credit_days": credits,
        "sales_cycle": cycle,
        "deal_days": deal_days_reconcile(),
        "csat_days": csat_daily_reconcile(),
    }
    if any(diff.values()):
        log.warning("Cost/revenue day rows differ from the raw data: %s", diff)
    return diff


# --- reads ---------------------------------------------------------------------------------


def new_leads_by_campaign(start, end) -> dict[int, int]:
    """New leads per acquiring campaign created in ``[start, end)`` (site days)."""
    return dict(
        CampaignLeadDaily.objects.filter(day__gte=start, day__lt=end)
        .exclude(campaign_id=0)
        .values("campaign_id")
        .annotate(n=Sum("new_leads"))
        .filter(n__gt=0)
        .values_list("campaign_id", "n")
        .order_by()
    )


def day_credits(stages, start, end, model: str, group) -> dict[tuple, dict[int, Fraction]]:
    """Credits per ``group`` values and campaign of the entries into ``stages`` in
    ``[start, end)`` under ``model``, from the day rows (grouped in the database by
    ``group`` × campaign × n; ``group`` maps names to fields or expressions). Exactly
    ``attribution.credits_from_facts`` over the same credit rows, keys included."""
    rows = list(
        CreditDaily.objects.filter(
            to_stage__in=[str(s) for s in stages], day__gte=start, day__lt=end
        )
        .annotate(**{k: v for k, v in group.items() if not isinstance(v, str)})
        .values(*group, "campaign_id", "n")
        .annotate(
            c=Sum("changes"),
            f=Sum("first"),
            lt=Sum("last"),
            t=Sum("touches"),
            lin=Sum("linear"),
            ush=Sum("u_shaped"),
        )
        .values_list(*group, "campaign_id", "n", "c", "f", "lt", "t", "lin", "ush")
        .order_by()
    )
    return fold_credits(rows, model, len(group))


def fold_credits(rows, model: str, width: int) -> dict[tuple, dict[int, Fraction]]:
    """Sum day-row figures ``(*group, campaign, n, c, f, lt, t, lin, ush)`` into credits:
    integer numerators over one common denominator, one ``Fraction`` per result."""
    rows = [r for r in rows if r[width + 2]]  # no changes: no row (and no key)
    denom = denominator(max((r[width + 1] for r in rows), default=0))
    scale = denom // DENOMINATOR
    acc: dict[tuple, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for row in rows:
        g, (campaign_id, n, c, f, lt, t, lin, ush) = tuple(row[:width]), row[width:]
        if model == "first_touch":
            if not f:
                continue
            num = f * denom
        elif model == "last_touch":
            if not lt:
                continue
            num = lt * denom
        elif n == 0:  # folded: exact numerators over DENOMINATOR
            num = (lin if model == "linear" else ush) * scale
        else:
            linear, u_shaped = shape_numerators(n, t, f, lt, c, denom)
            num = linear if model == "linear" else u_shaped
        acc[g][campaign_id] += num
    return {g: {k: Fraction(v, denom) for k, v in m.items()} for g, m in acc.items()}


def sales_cycle_middle(q) -> tuple[int, list[tuple]]:
    """The number of customer entries in the period with an ``sql`` entry (contact filters
    applied) and the ``(sql_at, at)`` of the one or two in the middle when ordered by their
    length (what a median needs): a count and a read of at most two rows, sorted in the
    database, instead of every pair of the period (17,700 at 1M for a year)."""
    qs = SalesCycleFact.objects.filter(at__gte=q.start_dt, at__lt=q.end_dt).filter(
        q.contact_q("contact__")
    )
    n = qs.count()
    if not n:
        return 0, []
    middle = (
        qs.annotate(length=F("at") - F("sql_at"))
        .order_by("length")
        .values_list("sql_at", "at")[(n - 1) // 2 : n // 2 + 1]
    )
    return n, list(middle)


# --- credit rows replaced (reports.lifecycle_facts) ----------------------------------------

_RETURNED = "transition_id, contact_id, to_stage, at, campaign_id, touches, n, first, last"


def credit_rows_delete(*, transition_ids=None, contact_ids=None) -> list[tuple]:
    """Delete the credit rows of these transitions (or contacts) and return them as
    ``CREDIT_FIELDS`` tuples: ``DELETE … RETURNING`` on PostgreSQL (no extra query),
    read-then-delete elsewhere."""
    column, ids = (
        ("transition_id", transition_ids)
        if transition_ids is not None
        else ("contact_id", contact_ids)
    )
    ids = list(ids)
    if not ids:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f"DELETE FROM {TransitionCredit._meta.db_table} "  # noqa: S608
                f"WHERE {column} = ANY(%s) RETURNING {_RETURNED}",
                [ids],
            )
            return cursor.fetchall()
    qs = TransitionCredit.objects.filter(**{f"{column}__in": ids})
    rows = list(qs.values_list(*_RETURNED.split(", ")))
    qs.delete()
    return rows


# --- handlers (settings: ACTIVITIES_RECORDED_HANDLERS, CONTACTS_CHANGED_HANDLERS) ----------


@handler("in_transaction")
def on_contacts_changed(event) -> None:
    """Contacts created (the event without fields) or whose acquisition changed (an edit, an
    import, a merge filling it): recount their creation days' new leads per campaign. (A
    merged-away duplicate's day is recounted by ``reports.handlers.on_contacts_merging``.)"""
    if not event.fields or "acquired_by" in event.fields:
        campaign_leads_refresh_contacts(event.contact_ids)


@handler("queued")
def on_activities_recorded(event) -> None:
    """Ingestion sets ``acquired_by`` of the contacts it created after creating them (from
    the batch's first campaign touch): recount their creation days again."""
    if event.created_contact_ids:
        campaign_leads_refresh_contacts(event.created_contact_ids)


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """Entries into ``sql``/``customer``: their contacts' sales-cycle rows."""
    sales_cycle_apply_transitions(event.transitions)
