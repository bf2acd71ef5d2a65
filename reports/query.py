"""The parameters every report takes, parsed once and shared by pages, API and exports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

ATTRIBUTION_MODELS = {
    "first_touch": "First touch",
    "last_touch": "Last touch",
    "linear": "Linear",
    "u_shaped": "U-shaped",
}
DEFAULT_ATTRIBUTION = "last_touch"
GROUP_BY = ("campaign", "source", "segment")  # the funnel's groupings
# METRICS.md "Trends and review": fewer than 30 days of data gets a marker.
MIN_DAYS_OF_DATA = 30
CENT = Decimal("0.01")


class ReportParamError(ValueError):
    """A report parameter is malformed; the message is shown to the user (400)."""


def site_tz() -> ZoneInfo:
    return ZoneInfo(settings.TIME_ZONE)


def day_start(day: date) -> datetime:
    """The aware instant a site-time-zone day begins (DST-safe)."""
    return datetime.combine(day, time.min, tzinfo=site_tz())


def money(value) -> Decimal:
    """Round to cents, half up (METRICS.md: money rounded to cents)."""
    return Decimal(value or 0).quantize(CENT, rounding=ROUND_HALF_UP)


def ratio(num, den) -> float | None:
    """A rate as a fraction; None when the denominator is zero (METRICS.md preamble)."""
    if not den:
        return None
    return float(num) / float(den)


@dataclass(frozen=True)
class ReportQuery:
    """A report period ``[start, end)`` of site-time-zone dates, with filters.

    Filters on contact-level figures: ``source``, ``owner`` and ``segment`` (current
    members) restrict the contacts; ``campaign``/``channel`` restrict campaign rows and,
    for contact-level counts (new leads, MQLs …), the contacts the campaign acquired
    (``Contact.acquired_by``, their first touch).
    """

    start: date
    end: date
    campaign: int | None = None
    channel: str = ""
    source: str = ""
    segment: int | None = None
    owner: int | None = None
    attribution: str = DEFAULT_ATTRIBUTION
    compare: bool = False
    # The funnel by campaign, source or segment (reports.metrics.funnel_groups).
    group_by: str = ""

    @property
    def start_dt(self) -> datetime:
        return day_start(self.start)

    @property
    def end_dt(self) -> datetime:
        return day_start(self.end)

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    def previous(self) -> ReportQuery:
        """The previous period of equal length (METRICS.md "Short-term trend")."""
        return dataclasses.replace(
            self, start=self.start - timedelta(days=self.days), end=self.start, compare=False
        )

    @property
    def too_little_data(self) -> bool:
        """Fewer than 30 days of the period have happened yet (METRICS.md "Trends").

        Choice: "days of data" = days of the period up to today; a future part of a
        period holds no data.
        """
        today = timezone.localdate(timezone=site_tz())
        return (min(self.end, today + timedelta(days=1)) - self.start).days < MIN_DAYS_OF_DATA

    @property
    def filters(self) -> dict:
        return {
            "campaign": self.campaign,
            "channel": self.channel or None,
            "source": self.source or None,
            "segment": self.segment,
            "owner": self.owner,
        }

    @property
    def has_contact_filters(self) -> bool:
        return bool(self.source or self.segment or self.owner)

    def contact_q(self, prefix: str = "") -> Q:
        """Q on a Contact (reached through ``prefix``, e.g. ``"contact__"``)."""
        from crm.models import SegmentMembership

        q = Q()
        if self.source:
            q &= Q(**{f"{prefix}source": self.source})
        if self.owner:
            q &= Q(**{f"{prefix}owner_id": self.owner})
        if self.campaign:
            q &= Q(**{f"{prefix}acquired_by_id": self.campaign})
        if self.channel:
            q &= Q(**{f"{prefix}acquired_by__channel": self.channel})
        if self.segment:
            ref = f"{prefix}id" if prefix else "id"
            q &= Exists(
                SegmentMembership.objects.filter(segment_id=self.segment, contact_id=OuterRef(ref))
            )
        return q

    def campaign_q(self, prefix: str = "") -> Q:
        """Q on a Campaign (reached through ``prefix``)."""
        q = Q()
        if self.campaign:
            q &= Q(**{f"{prefix}id" if prefix == "" else f"{prefix}id": self.campaign})
        if self.channel:
            q &= Q(**{f"{prefix}channel": self.channel})
        return q

    def contact_filters_only(self) -> ReportQuery:
        """The same query without campaign/channel (for per-campaign rows)."""
        return dataclasses.replace(self, campaign=None, channel="")

    def as_params(self) -> dict:
        params = {"start": self.start.isoformat(), "end": self.end.isoformat()}
        params.update({k: v for k, v in self.filters.items() if v})
        params["attribution"] = self.attribution
        if self.compare:
            params["compare"] = "previous"
        if self.group_by:
            params["group_by"] = self.group_by
        return params


# Row ids are positive 64-bit integers; a larger number would overflow the database driver.
MAX_ID = 2**63 - 1


def _int(value: str, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ReportParamError(f"'{name}' must be a whole number.") from None
    if not 0 < number <= MAX_ID:
        raise ReportParamError(f"'{name}' must be an id: a whole number from 1 up.")
    return number


def _existing_id(model, value: str | None, name: str) -> int | None:
    """The id of an existing ``model`` row, or None when the parameter is not given."""
    pk = _int(value, name)
    if pk is not None and not model._default_manager.filter(pk=pk).exists():
        raise ReportParamError(f"There is no {name} with the id {pk}.")
    return pk


def _choice(value: str | None, name: str, choices) -> str:
    """One of a fixed choice list's values (``choices``: a TextChoices), or ""."""
    if not value:
        return ""
    if value not in choices.values:
        raise ReportParamError(
            f"Unknown {name} '{value[:50]}'; use one of {', '.join(choices.values)}."
        )
    return value


def _filters(params) -> dict:
    """The campaign, channel, source, segment and owner filters, each checked against what
    exists: an unknown one would match nothing and every figure would read 0, as if there
    had been no activity at all (a typo such as "Email" for "email")."""
    from django.contrib.auth import get_user_model

    from crm.models import Campaign, Channel, Segment, Source

    return {
        "campaign": _existing_id(Campaign, params.get("campaign"), "campaign"),
        "channel": _choice(params.get("channel"), "channel", Channel),
        "source": _choice(params.get("source"), "source", Source),
        "segment": _existing_id(Segment, params.get("segment"), "segment"),
        "owner": _existing_id(get_user_model(), params.get("owner"), "owner"),
    }


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ReportParamError(f"'{name}' must be a date as YYYY-MM-DD.") from None


def preset_period(preset: str, today: date) -> tuple[date, date] | None:
    """Start and end (exclusive) of a named period relative to ``today``."""
    q_start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
    if preset == "last_30":
        return today - timedelta(days=29), today + timedelta(days=1)
    if preset == "last_90":
        return today - timedelta(days=89), today + timedelta(days=1)
    if preset == "this_quarter":
        nxt = date(q_start.year + (q_start.month == 10), (q_start.month + 2) % 12 + 1, 1)
        return q_start, nxt
    if preset == "last_quarter":
        prev = date(q_start.year - (q_start.month == 1), (q_start.month - 4) % 12 + 1, 1)
        return prev, q_start
    if preset == "this_year":
        return date(today.year, 1, 1), date(today.year + 1, 1, 1)
    if preset == "last_year":
        return date(today.year - 1, 1, 1), date(today.year, 1, 1)
    return None


PERIOD_PRESETS = {
    "last_30": "Last 30 days",
    "last_90": "Last 90 days",
    "this_quarter": "This quarter",
    "last_quarter": "Last quarter",
    "this_year": "This year",
    "last_year": "Last year",
    "custom": "Custom",
}


DEFAULT_PRESET = "last_90"


def parse_query(params, *, default_preset: str = DEFAULT_PRESET) -> ReportQuery:
    """Build a ReportQuery from request parameters or raise ReportParamError."""
    today = timezone.localdate(timezone=site_tz())
    start = _date(params.get("start"), "start")
    end = _date(params.get("end"), "end")
    preset = params.get("period") or ""
    if preset and preset != "custom":
        period = preset_period(preset, today)
        if period is None:
            raise ReportParamError(f"Unknown period '{preset}'.")
        start, end = period
    if start is None and end is None:
        start, end = preset_period(default_preset, today)
    elif start is None or end is None:
        raise ReportParamError("Give both 'start' and 'end' (YYYY-MM-DD).")
    if end <= start:
        raise ReportParamError("'end' must be after 'start' (the period is [start, end)).")
    if (end - start).days > 3660:
        raise ReportParamError("The period may span at most ten years.")
    attribution = params.get("attribution") or DEFAULT_ATTRIBUTION
    if attribution not in ATTRIBUTION_MODELS:
        raise ReportParamError(
            f"Unknown attribution '{attribution}'; use one of {', '.join(ATTRIBUTION_MODELS)}."
        )
    compare = params.get("compare") or ""
    if compare not in ("", "previous", "1", "on"):
        raise ReportParamError("'compare' may only be 'previous'.")
    group_by = params.get("group_by") or ""
    if group_by not in ("", *GROUP_BY):
        raise ReportParamError(f"'group_by' may be one of {', '.join(GROUP_BY)}.")
    return ReportQuery(
        start=start,
        end=end,
        **_filters(params),
        attribution=attribution,
        compare=bool(compare),
        group_by=group_by,
    )
