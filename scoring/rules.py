"""What a rule may say, how it is checked, and how it becomes a database condition.

Fit rules name a whitelisted contact or company field (or ``attributes.<key>``) so a rule
can never reach a column it should not; engagement filters use a plain "URL contains"
text instead of a regular expression, so no pattern can be catastrophic and the same
condition runs in SQL on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from crm.attributes import attribute_q
from crm.models import EmailStatus
from crm.models.activities import (
    is_unsubscribe_click,
    on_unsubscribe_link_q,
    unsubscribe_link_prefix,
)
from crm.models.choices import ActivityKind

from .models import POINTS_MAX, POINTS_MIN, Rule

# field name in a rule → ORM path from Contact
FIT_FIELDS: dict[str, str] = {
    "email": "email",
    "email_domain": "email",
    "first_name": "first_name",
    "last_name": "last_name",
    "job_title": "job_title",
    "country": "country",
    "source": "source",
    "timezone": "timezone",
    "company.name": "company__name",
    "company.domain": "company__domain",
    "company.industry": "company__industry",
    "company.size_band": "company__size_band",
    "company.country": "company__country",
}
ATTRIBUTE_KEY = re.compile(r"^attributes\.([A-Za-z0-9_]{1,50})$")
TEXT_OPERATORS = {
    "equals": "equals",
    "not_equals": "does not equal",
    "contains": "contains",
    "not_contains": "does not contain",
    "starts_with": "starts with",
    "ends_with": "ends with",
    "in": "is one of",
    "not_in": "is none of",
    "is_empty": "is empty",
    "is_not_empty": "is not empty",
}
NUMERIC_OPERATORS = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}
OPERATORS = {**TEXT_OPERATORS, **NUMERIC_OPERATORS}
NO_VALUE = {"is_empty", "is_not_empty"}
MAX_LIST_ITEMS = 100


def field_choices() -> list[tuple[str, str]]:
    return [(f, f) for f in FIT_FIELDS] + [("attributes.<key>", "attributes.<key>")]


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def rule_errors(data: dict) -> dict[str, list[str]]:
    """Every problem with a rule's settings, by field name (empty when it is valid)."""
    errors: dict[str, list[str]] = {}

    def fail(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    kind = data.get("kind")
    points = data.get("points")
    if points is None or isinstance(points, bool) or not isinstance(points, int):
        fail("points", "Points must be a whole number.")
    elif not POINTS_MIN <= points <= POINTS_MAX:
        fail("points", f"Points must be between {POINTS_MIN} and {POINTS_MAX}.")
    if kind == Rule.Kind.FIT:
        field = (data.get("field") or "").strip()
        operator = data.get("operator") or ""
        value = (data.get("value") or "").strip()
        is_attribute = bool(ATTRIBUTE_KEY.match(field))
        if field not in FIT_FIELDS and not is_attribute:
            fail(
                "field",
                f"There is no field {field[:60]!r}. Use one of {', '.join(FIT_FIELDS)} "
                "or attributes.<key> (letters, digits, underscore).",
            )
        if operator not in OPERATORS:
            fail("operator", f"Unknown operator {operator[:30]!r}.")
        elif operator in NUMERIC_OPERATORS:
            if field in FIT_FIELDS:
                fail("operator", f"{field} is text; numeric comparisons need attributes.<key>.")
            try:
                Decimal(value)
            except (InvalidOperation, ValueError):
                fail("value", f"{operator} compares numbers; {value[:40]!r} is not a number.")
        elif operator not in NO_VALUE and not value:
            fail("value", "This operator needs a value.")
        elif operator in {"in", "not_in"} and len(_split(value)) > MAX_LIST_ITEMS:
            fail("value", f"At most {MAX_LIST_ITEMS} values in a list.")
    elif kind == Rule.Kind.ENGAGEMENT:
        if data.get("activity_kind") not in ActivityKind.values:
            fail("activity_kind", "Choose the activity kind this rule scores.")
        frequency = data.get("frequency") or Rule.Frequency.EVERY_TIME
        if frequency not in Rule.Frequency.values:
            fail("frequency", f"Unknown frequency {str(frequency)[:30]!r}.")
        url = data.get("url_contains") or ""
        if len(url) > 200:
            fail("url_contains", "The URL text is limited to 200 characters.")
        if data.get("expire_after_days") and data.get("half_life_days"):
            fail("half_life_days", "Choose either expiry or a half-life, not both.")
        for name in ("cap", "expire_after_days", "half_life_days"):
            number = data.get(name)
            if number is not None and (not isinstance(number, int) or number < 1):
                fail(name, "Use a whole number of at least 1, or leave it empty.")
    elif kind == Rule.Kind.NEGATIVE:
        negative = data.get("negative")
        if negative not in Rule.Negative.values:
            fail("negative", "Choose unsubscribed, hard bounce or inactivity.")
        if negative == Rule.Negative.INACTIVE and not data.get("inactive_days"):
            fail("inactive_days", "Say after how many days without activity this applies.")
        if isinstance(points, int) and points > 0:
            fail("points", "Negative engagement takes away points: use a negative number.")
    else:
        fail("kind", "Choose fit, engagement or negative.")
    return errors


def in_force(rule: Rule, at: datetime) -> bool:
    """Whether ``rule`` counts at ``at``: before its active-from date a rule is not in
    force, whatever its kind — worth nothing, as if switched off. (An engagement rule's
    activity condition also leaves out activities before that date, :func:`activity_q`.)
    """
    return rule.active_from is None or rule.active_from <= at


def active_from_parse(value) -> datetime | None:
    """A rule's ``active_from`` as sent to the API (rules, back-test drafts): an ISO 8601
    date-time, naive ones in the site time zone; None when empty. ``ValueError`` with the
    message to show otherwise."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = parse_datetime(str(value))
        except ValueError:  # well formed but impossible ("2026-02-30T00:00")
            parsed = None
    if parsed is None:
        raise ValueError("Use an ISO 8601 date-time.")
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def fit_q(rule: Rule) -> Q:
    """The contact condition of a fit rule, or of an unsubscribed/hard-bounce rule."""
    if rule.kind == Rule.Kind.NEGATIVE:
        status = {
            Rule.Negative.UNSUBSCRIBED: EmailStatus.UNSUBSCRIBED,
            Rule.Negative.HARD_BOUNCED: EmailStatus.HARD_BOUNCED,
        }[rule.negative]
        return Q(email_status=status)
    op, value = rule.operator, rule.value.strip()
    match = ATTRIBUTE_KEY.match(rule.field)
    if match:
        # The segments' builder: numbers compare as numbers (stored as JSON numbers or as
        # a CSV import's text), and a contact without the attribute matches no positive
        # condition, so a negation (not_equals, not_in, not_contains) applies to it as it
        # does to an empty profile field.
        return attribute_q(match.group(1), op, _attribute_value(op, value))
    path = FIT_FIELDS[rule.field]
    if op in NUMERIC_OPERATORS:  # refused by rule_errors (numbers are attributes' only)
        return Q(**{f"{path}__{op}": _attribute_value(op, value)})
    if rule.field == "email_domain":
        domains = _split(value) if op in {"in", "not_in"} else [value]
        q = Q()
        for d in domains:
            q |= Q(email__iendswith="@" + d.lstrip("@"))
        if op in {"equals", "in"}:
            return q
        if op in {"not_equals", "not_in"}:
            return ~q
        path = "email"
    lookups = {
        "equals": "iexact",
        "contains": "icontains",
        "starts_with": "istartswith",
        "ends_with": "iendswith",
    }
    if op in lookups:
        return Q(**{f"{path}__{lookups[op]}": value})
    if op == "not_equals":
        return ~Q(**{f"{path}__iexact": value})
    if op == "not_contains":
        return ~Q(**{f"{path}__icontains": value})
    if op in {"in", "not_in"}:
        q = Q()
        for item in _split(value):
            q |= Q(**{f"{path}__iexact": item})
        return q if op == "in" else ~q
    empty = Q(**{f"{path}__isnull": True}) | Q(**{path: ""})
    return empty if op == "is_empty" else ~empty


def _attribute_value(op: str, value: str):
    """A fit rule's value (always text) as ``crm.attributes.attribute_q`` takes it."""
    if op in NUMERIC_OPERATORS:
        return float(Decimal(value))
    if op in {"in", "not_in"}:
        return _split(value)
    return value


def activity_q(rule: Rule, *, now, prefix: str = "") -> Q:
    """The activity condition of an engagement rule (``prefix`` "activities__" from Contact).

    A machine's activity never scores; nor does a click on the unsubscribe link, which is
    not a click (METRICS.md "unique clicks", ``crm.models.activities.click_q``): a contact
    who clicks "unsubscribe" gains no engagement points.
    """
    p = prefix
    q = Q(**{f"{p}kind": rule.activity_kind, f"{p}is_machine": False})
    if rule.activity_kind == ActivityKind.EMAIL_CLICKED:
        q &= ~on_unsubscribe_link_q(p)
    if rule.campaign_id:
        q &= Q(**{f"{p}campaign_id": rule.campaign_id})
    if rule.url_contains:
        q &= Q(**{f"{p}url__icontains": rule.url_contains})
    if rule.form:
        q &= Q(**{f"{p}details__form": rule.form})
    if rule.content_type:
        q &= Q(**{f"{p}details__content_type": rule.content_type})
    if rule.active_from:
        q &= Q(**{f"{p}occurred_at__gte": rule.active_from})
    if rule.expire_after_days:
        # Points of an activity older than the expiry window are gone (expiry entries).
        q &= Q(**{f"{p}occurred_at__gt": now - timedelta(days=rule.expire_after_days)})
    return q


def rule_describe(rule: Rule) -> str:
    """A one-line plain-text description for lists and the breakdown."""
    if rule.kind == Rule.Kind.FIT:
        value = "" if rule.operator in NO_VALUE else f" {rule.value}"
        return f"{rule.field} {OPERATORS.get(rule.operator, rule.operator)}{value}"
    if rule.kind == Rule.Kind.NEGATIVE:
        if rule.negative == Rule.Negative.INACTIVE:
            return f"no activity for {rule.inactive_days} days"
        return rule.get_negative_display()
    parts = [ActivityKind(rule.activity_kind).label if rule.activity_kind else "?"]
    if rule.url_contains:
        parts.append(f"URL contains {rule.url_contains}")
    if rule.form:
        parts.append(f"form {rule.form}")
    if rule.content_type:
        parts.append(f"content {rule.content_type}")
    parts.append(rule.get_frequency_display().lower())
    if rule.cap:
        parts.append(f"max {rule.cap}×")
    if rule.expire_after_days:
        parts.append(f"expires after {rule.expire_after_days} d")
    if rule.half_life_days:
        parts.append(f"half-life {rule.half_life_days} d")
    return ", ".join(parts)


def activity_matches(rule: Rule, activity, *, now, link_prefix: str | None = None) -> bool:
    """Python mirror of :func:`activity_q` for one in-memory activity of a batch
    (``link_prefix``: ``unsubscribe_link_prefix()``, read once by a caller that loops)."""
    if activity.kind != rule.activity_kind or activity.is_machine:
        return False
    if activity.kind == ActivityKind.EMAIL_CLICKED and is_unsubscribe_click(
        activity.kind,
        activity.url,
        unsubscribe_link_prefix() if link_prefix is None else link_prefix,
    ):
        return False
    if rule.campaign_id and activity.campaign_id != rule.campaign_id:
        return False
    if rule.url_contains and rule.url_contains.lower() not in (activity.url or "").lower():
        return False
    details = activity.details or {}
    if rule.form and details.get("form") != rule.form:
        return False
    if rule.content_type and details.get("content_type") != rule.content_type:
        return False
    if rule.active_from and activity.occurred_at < rule.active_from:
        return False
    return not (
        rule.expire_after_days
        and activity.occurred_at <= now - timedelta(days=rule.expire_after_days)
    )
