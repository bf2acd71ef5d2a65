"""The segment definition language: validation with messages naming the bad part, and
compilation to one ``Q`` on :class:`~crm.models.Contact`.

Field names come from the whitelists below and are never interpolated into SQL; values are
always query parameters. Custom attribute keys must match :data:`ATTRIBUTE_KEY`, and
:mod:`crm.attributes` reads the key as an expression, so a key named like a Django lookup
(``range``, ``isnull`` …) is that key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db.models import Count, Exists, OuterRef, Q
from django.db.models.functions import Lower
from django.db.models.lookups import In
from django.utils import timezone
from django.utils.module_loading import import_string

from crm.attributes import attribute_q
from crm.models import (
    Activity,
    ActivityKind,
    Company,
    ConsentBasis,
    EmailStatus,
    Segment,
    SegmentMembership,
    Source,
    Stage,
)
from crm.models.activities import persons_q

from .params import SYMBOLIC_NOW, AgoValue, DayAgoValue, Ids, InIds, day_ago

MAX_DEPTH = 8
MAX_CONDITIONS = 50
MAX_IN_VALUES = 500
MAX_TEXT = 500
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*$")
GROUP_KEYS = ("all", "any", "not")


class DefinitionError(ValueError):
    """A definition was refused; ``errors`` is a list of ``(path, message)``."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in errors))

    def as_dict(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for path, message in self.errors:
            out.setdefault(path or "definition", []).append(message)
        return out


# --- Field whitelist -----------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    lookup: str  # the ORM path; chosen here, never taken from input
    type: str  # text | choice | number | datetime | ref | attribute
    label: str
    choices: tuple[str, ...] = ()


TEXT_OPS = ("equals", "not_equals", "in", "not_in", "contains", "starts_with")
EMPTY_OPS = ("is_empty", "is_not_empty")
NUMBER_OPS = ("equals", "not_equals", "in", "not_in", "gt", "lt", "gte", "lte", "between")
DATE_OPS = ("before", "after", "between", "within_last_days", *EMPTY_OPS)
OPS_BY_TYPE = {
    "text": (*TEXT_OPS, *EMPTY_OPS),
    "choice": ("equals", "not_equals", "in", "not_in", *EMPTY_OPS),
    "number": NUMBER_OPS,
    "datetime": DATE_OPS,
    "ref": ("equals", "not_equals", "in", "not_in", *EMPTY_OPS),
    # An attribute's type is its value's: text, a number (as JSON or as text) or an ISO
    # date (crm.attributes); every operator of those types applies.
    "attribute": tuple(dict.fromkeys((*TEXT_OPS, *EMPTY_OPS, *NUMBER_OPS, *DATE_OPS))),
}
ALL_OPS = tuple(dict.fromkeys(op for ops in OPS_BY_TYPE.values() for op in ops))

FIELDS: dict[str, Field] = {
    "email": Field("email", "text", "Email"),
    "first_name": Field("first_name", "text", "First name"),
    "last_name": Field("last_name", "text", "Last name"),
    "job_title": Field("job_title", "text", "Job title"),
    "phone": Field("phone", "text", "Phone"),
    "country": Field("country", "text", "Country"),
    "timezone": Field("timezone", "text", "Time zone"),
    "source": Field("source", "choice", "Source", tuple(Source.values)),
    "stage": Field("stage", "choice", "Stage", tuple(Stage.values)),
    "score": Field("scorecard__score", "number", "Score"),
    "email_status": Field("email_status", "choice", "Email status", tuple(EmailStatus.values)),
    "consent_basis": Field("consent_basis", "choice", "Consent basis", tuple(ConsentBasis.values)),
    "consent_given_at": Field("consent_given_at", "datetime", "Consent given"),
    "consent_source": Field("consent_source", "text", "Consent source"),
    "created_at": Field("created_at", "datetime", "Created"),
    "updated_at": Field("updated_at", "datetime", "Last updated"),
    "owner": Field("owner", "ref", "Owner (user id)"),
    "acquired_by": Field("acquired_by", "ref", "Acquired by (campaign id)"),
    "company.industry": Field("company__industry", "text", "Company industry"),
    "company.size_band": Field(
        "company__size_band", "choice", "Company size", tuple(Company.SizeBand.values)
    ),
    "company.country": Field("company__country", "text", "Company country"),
    "company.name": Field("company__name", "text", "Company name"),
    "company.domain": Field("company__domain", "text", "Company domain"),
}
BEHAVIOUR_KEYS = {
    "did",
    "did_not",
    "campaign",
    "url_contains",
    "form",
    "content_type",
    "min_count",
    "max_count",
    "within_last_days",
    "between",
}
TYPE_WORD = {
    "text": "a text",
    "choice": "a choice",
    "number": "a number",
    "datetime": "a date",
    "ref": "a reference",
    "attribute": "an attribute",
}


def field_for(name: Any) -> Field | None:
    if not isinstance(name, str):
        return None
    if name in FIELDS:
        return FIELDS[name]
    if name.startswith("attributes."):
        key = name.removeprefix("attributes.")
        if len(key) <= 50 and ATTRIBUTE_KEY.match(key):
            return Field(f"attributes__{key}", "attribute", f"Attribute {key}")
    return None


def condition_providers() -> dict[str, Any]:
    """Extension conditions from ``settings.SEGMENT_CONDITION_PROVIDERS`` (see package doc)."""
    providers: dict[str, Any] = {}
    for path in getattr(settings, "SEGMENT_CONDITION_PROVIDERS", ()):
        providers.update(import_string(path))
    return providers


# --- Validation ----------------------------------------------------------------------------


def _quote(value: Any) -> str:
    text = str(value)
    return f'"{text[:60]}"'


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float)) and not isinstance(value, bool)


def parse_day(value: Any) -> date | None:
    """A ``YYYY-MM-DD`` string, or None if it is not one."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


class _Validator:
    def __init__(self, *, segment_id: int | None):
        self.segment_id = segment_id
        self.errors: list[tuple[str, str]] = []
        self.conditions = 0
        self.segment_refs: set[int] = set()
        self.providers = condition_providers()

    def fail(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def node(self, node: Any, path: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.fail(path, f"nested deeper than {MAX_DEPTH} levels.")
            return
        if not isinstance(node, dict) or not node:
            self.fail(
                path,
                'must be a group ({"all": [...]}, {"any": [...]}, '
                '{"not": {...}}) or a condition object.',
            )
            return
        group_keys = [k for k in GROUP_KEYS if k in node]
        if group_keys:
            if len(node) != 1:
                self.fail(path, "a group has exactly one key: all, any or not.")
                return
            key = group_keys[0]
            sub = f"{path}.{key}" if path else key
            if key == "not":
                self.node(node["not"], sub, depth + 1)
                return
            children = node[key]
            if not isinstance(children, list):
                self.fail(sub, "must be a list of conditions or groups.")
                return
            for i, child in enumerate(children):
                self.node(child, f"{sub}[{i}]", depth + 1)
            return
        self.conditions += 1
        if self.conditions == MAX_CONDITIONS + 1:
            self.fail(path, f"a definition holds at most {MAX_CONDITIONS} conditions.")
        if "field" in node:
            self.profile(node, path)
        elif "did" in node or "did_not" in node:
            self.behaviour(node, path)
        elif "in_segment" in node or "not_in_segment" in node:
            self.membership(node, path)
        else:
            self.provider(node, path)

    def _at(self, path: str, key: str) -> str:
        return f"{path}.{key}" if path else key

    def profile(self, node: dict, path: str) -> None:
        extra = set(node) - {"field", "op", "value"}
        if extra:
            self.fail(self._at(path, sorted(extra)[0]), "unknown key in a profile condition.")
        name = node.get("field")
        fld = field_for(name)
        if fld is None:
            self.fail(self._at(path, "field"), f"{_quote(name)} is not a known field.")
            return
        op = node.get("op")
        if op not in ALL_OPS:
            self.fail(self._at(path, "op"), f"{_quote(op)} is not a known operator.")
            return
        if op not in OPS_BY_TYPE[fld.type]:
            self.fail(
                self._at(path, "op"),
                f"{_quote(op)} is not valid for {TYPE_WORD[fld.type]} field ({name}).",
            )
            return
        self.value(fld, op, node.get("value"), self._at(path, "value"))

    def value(self, fld: Field, op: str, value: Any, path: str) -> None:
        fail = partial(self.fail, path)
        if op in EMPTY_OPS:
            return
        if op in ("in", "not_in"):
            if not isinstance(value, list) or not value or len(value) > MAX_IN_VALUES:
                fail(f"must be a list of 1 to {MAX_IN_VALUES} values.")
                return
            for i, item in enumerate(value):
                self.scalar(fld, item, f"{path}[{i}]")
            return
        if op == "between":
            if not isinstance(value, list) or len(value) != 2:
                fail("must be a list of two values [from, to].")
                return
            if fld.type == "attribute":
                self.attribute_range(value, path)
                return
            for i, item in enumerate(value):
                self.scalar(fld, item, f"{path}[{i}]", dates=fld.type == "datetime")
            return
        if op == "within_last_days":
            if not _is_int(value) or not 0 < value <= 36500:
                fail("must be a whole number of days between 1 and 36500.")
            return
        if op in ("gt", "lt", "gte", "lte") and fld.type == "attribute":
            if not _is_number(value):
                fail(f"must be a number, not {_quote(value)}.")
            return
        if op in ("before", "after"):
            self.scalar(fld, value, path, dates=True)
            return
        self.scalar(fld, value, path)

    def attribute_range(self, value: list, path: str) -> None:
        """An attribute's ``between``: two numbers, or two days (a number range, a date
        range — what the stored values are compared as follows from them)."""
        if all(_is_number(v) for v in value):
            return
        if all(isinstance(v, str) for v in value):
            for i, item in enumerate(value):
                if parse_day(item) is None:
                    self.fail(
                        f"{path}[{i}]", f"{_quote(item)} is not a date in the form YYYY-MM-DD."
                    )
            return
        self.fail(path, "must be two numbers or two dates (YYYY-MM-DD).")

    def scalar(self, fld: Field, value: Any, path: str, dates: bool = False) -> None:
        if dates:
            if parse_day(value) is None:
                self.fail(path, f"{_quote(value)} is not a date in the form YYYY-MM-DD.")
        elif fld.type == "number":
            if not _is_number(value):
                self.fail(path, f"must be a number, not {_quote(value)}.")
        elif fld.type == "ref":
            if not _is_int(value):
                self.fail(path, f"must be an id (a whole number), not {_quote(value)}.")
        elif fld.type == "choice":
            if value not in fld.choices:
                self.fail(path, f"{_quote(value)} is not one of: {', '.join(fld.choices)}.")
        elif fld.type == "attribute":
            if not (isinstance(value, str | bool) or _is_number(value)) or (
                isinstance(value, str) and len(value) > MAX_TEXT
            ):
                self.fail(path, "must be text, a number or true/false.")
        elif not isinstance(value, str) or not value or len(value) > MAX_TEXT:
            self.fail(path, f"must be non-empty text of at most {MAX_TEXT} characters.")

    def behaviour(self, node: dict, path: str) -> None:
        at = partial(self._at, path)
        extra = set(node) - BEHAVIOUR_KEYS
        if extra:
            self.fail(at(sorted(extra)[0]), "unknown key in a behaviour condition.")
        if "did" in node and "did_not" in node:
            self.fail(path, "give either did or did_not, not both.")
            return
        key = "did" if "did" in node else "did_not"
        if node[key] not in ActivityKind.values:
            self.fail(at(key), f"{_quote(node[key])} is not a known activity kind.")
        if "campaign" in node and node["campaign"] is not None and not _is_int(node["campaign"]):
            self.fail(at("campaign"), "must be a campaign id (a whole number).")
        for name in ("url_contains", "form", "content_type"):
            v = node.get(name)
            if v is not None and (not isinstance(v, str) or not v or len(v) > MAX_TEXT):
                self.fail(at(name), f"must be non-empty text of at most {MAX_TEXT} characters.")
        for name in ("min_count", "max_count"):
            v = node.get(name)
            if v is not None and (not _is_int(v) or not 0 <= v <= 1_000_000):
                self.fail(at(name), f"must be a whole number, not {_quote(v)}.")
        if key == "did_not" and (node.get("min_count") or node.get("max_count") is not None):
            self.fail(path, "did_not takes no counts; use did with max_count.")
        mn, mx = node.get("min_count"), node.get("max_count")
        if _is_int(mn) and _is_int(mx) and mx < mn:
            self.fail(at("max_count"), "must not be less than min_count.")
        if "within_last_days" in node and "between" in node:
            self.fail(path, "give either within_last_days or between, not both.")
        if node.get("within_last_days") is not None:
            v = node["within_last_days"]
            if not _is_int(v) or not 0 < v <= 36500:
                self.fail(at("within_last_days"), "must be a whole number of days (1–36500).")
        if "between" in node:
            v = node["between"]
            if not isinstance(v, list) or len(v) != 2:
                self.fail(at("between"), "must be two dates [from, to] (YYYY-MM-DD).")
            else:
                days = [parse_day(d) for d in v]
                for i, d in enumerate(days):
                    if d is None:
                        self.fail(
                            f"{at('between')}[{i}]",
                            f"{_quote(v[i])} is not a date in the form YYYY-MM-DD.",
                        )
                if all(days) and days[1] < days[0]:
                    self.fail(at("between"), "the end date is before the start date.")

    def membership(self, node: dict, path: str) -> None:
        key = "in_segment" if "in_segment" in node else "not_in_segment"
        if len(node) != 1:
            self.fail(path, f"a {key} condition has only the key {key}.")
            return
        ref = node[key]
        if not _is_int(ref):
            self.fail(self._at(path, key), "must be a segment id (a whole number).")
            return
        if self.segment_id is not None and ref == self.segment_id:
            self.fail(self._at(path, key), "a segment cannot refer to itself.")
            return
        self.segment_refs.add(ref)

    def provider(self, node: dict, path: str) -> None:
        keys = list(node)
        provider = self.providers.get(keys[0]) if len(keys) == 1 else None
        if provider is None:
            self.fail(path, f"{_quote(keys[0])} is not a known condition.")
            return
        try:
            provider.validate(node)
        except ValueError as exc:
            self.fail(self._at(path, keys[0]), str(exc))


def validate_definition(definition: Any, *, segment_id: int | None = None) -> None:
    """Raise :class:`DefinitionError` naming every bad part; check segment references.

    References must name existing segments and must not lead back to ``segment_id``
    through other segments' stored definitions (an indirect cycle).
    """
    v = _Validator(segment_id=segment_id)
    v.node(definition, "", 0)
    if not v.errors and v.segment_refs:
        known = dict(Segment.objects.filter(pk__in=v.segment_refs).values_list("pk", "definition"))
        for ref in sorted(v.segment_refs - set(known)):
            v.fail("", f"segment {ref} does not exist.")
        if segment_id is not None and not v.errors:
            cycle = _find_cycle(segment_id, set(known))
            if cycle:
                v.fail("", "a segment cannot refer to itself: " + " → ".join(map(str, cycle)))
    if v.errors:
        raise DefinitionError(v.errors)


def segment_refs(definition: Any) -> set[int]:
    """Ids named by in_segment / not_in_segment anywhere in a (stored) definition."""
    refs: set[int] = set()
    stack = [definition]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in ("in_segment", "not_in_segment"):
                if _is_int(node.get(key)):
                    refs.add(node[key])
            stack.extend(v for k, v in node.items() if k in GROUP_KEYS)
        elif isinstance(node, list):
            stack.extend(node)
    return refs


def _find_cycle(start: int, first_refs: set[int]) -> list[int] | None:
    """Walk stored definitions breadth-first; return a path back to ``start`` if any."""
    parent: dict[int, int] = dict.fromkeys(first_refs, start)
    frontier = set(first_refs)
    while frontier:
        rows = Segment.objects.filter(pk__in=frontier).values_list("pk", "definition")
        frontier = set()
        for pk, definition in rows:
            for ref in segment_refs(definition):
                if ref == start:
                    path = [pk]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if ref not in parent:
                    parent[ref] = pk
                    frontier.add(ref)
    return None


# --- Compilation ---------------------------------------------------------------------------


def _ago(now, days: int):
    """``now - days``; a parameter marker when compiling ahead of time (``SYMBOLIC_NOW``)."""
    if now is SYMBOLIC_NOW:
        return AgoValue(days)
    return now - timedelta(days=days)


def _day_ago(now, days: int):
    """The site-local day ``days`` before ``now``'s as ``YYYY-MM-DD``; a parameter marker
    when compiling ahead of time (``SYMBOLIC_NOW``)."""
    if now is SYMBOLIC_NOW:
        return DayAgoValue(days)
    return day_ago(now, days)


def _day_start(day: date) -> datetime:
    """Midnight of a day in the site time zone (periods are half-open, site-local)."""
    return timezone.make_aware(datetime.combine(day, time.min))


def compile_definition(definition: Any, *, now: datetime | None = None) -> Q:
    """Turn a validated definition into one ``Q`` on Contact (validates first)."""
    validate_definition(definition)
    return _compile(definition, now or timezone.now(), condition_providers())


def _compile(node: dict, now: datetime, providers: dict, restrict=None) -> Q:
    """``restrict``: contact ids the caller will filter to (lets count subqueries shrink),
    or an :class:`~.params.Ids` marker; ``now`` may be ``SYMBOLIC_NOW`` (see :mod:`.params`).
    """
    if "all" in node:
        q = Q()
        for child in node["all"]:
            q &= _compile(child, now, providers, restrict)
        return q
    if "any" in node:
        if not node["any"]:
            return Q(pk__in=[])
        q = Q()
        for child in node["any"]:
            q |= _compile(child, now, providers, restrict)
        return q
    if "not" in node:
        return ~_compile(node["not"], now, providers, restrict)
    if "field" in node:
        return _profile(node, now)
    if "did" in node or "did_not" in node:
        return _behaviour(node, now, restrict)
    if "in_segment" in node:
        return Q(_member_of(node["in_segment"]))
    if "not_in_segment" in node:
        return ~Q(_member_of(node["not_in_segment"]))
    (key,) = node
    return providers[key].build(node)


def _member_of(segment_id: int) -> Exists:
    # Reads the other segment's stored membership: never re-inlines its definition.
    return Exists(SegmentMembership.objects.filter(segment_id=segment_id, contact=OuterRef("pk")))


def _profile(node: dict, now: datetime) -> Q:
    fld = field_for(node["field"])
    op, value, lk = node["op"], node.get("value"), fld.lookup
    if fld.type == "attribute":
        # Shared with scoring's fit rules: a segment and a rule on an attribute agree.
        key = lk.removeprefix("attributes__")
        return attribute_q(key, op, value, day_ago=partial(_day_ago, now))
    if fld.type == "ref" and op in ("equals", "not_equals", "in", "not_in"):
        lk = f"{lk}_id"
    text = fld.type == "text"
    if op == "equals":
        return Q(**{f"{lk}__iexact" if text and isinstance(value, str) else lk: value})
    if op == "not_equals":
        return ~Q(**{f"{lk}__iexact" if text and isinstance(value, str) else lk: value})
    if op in ("in", "not_in"):
        # Text compares case-insensitively, as ``equals`` does.
        q = Q(In(Lower(lk), [v.lower() for v in value])) if text else Q(**{f"{lk}__in": value})
        return q if op == "in" else ~q
    if op == "contains":
        return Q(**{f"{lk}__icontains": value})
    if op == "starts_with":
        return Q(**{f"{lk}__istartswith": value})
    if op in ("gt", "lt", "gte", "lte"):
        return Q(**{f"{lk}__{op}": value})
    if op in ("is_empty", "is_not_empty"):
        q = Q(**{f"{lk}__isnull": True})
        if fld.type in ("text", "choice"):
            q |= Q(**{lk: ""})
        return q if op == "is_empty" else ~q
    if op == "within_last_days":
        return Q(**{f"{lk}__gte": _ago(now, value)})
    if fld.type == "datetime":
        if op == "before":
            return Q(**{f"{lk}__lt": _day_start(parse_day(value))})
        if op == "after":
            return Q(**{f"{lk}__gte": _day_start(parse_day(value) + timedelta(days=1))})
        start, end = (parse_day(v) for v in value)  # between: both days included
        return Q(**{f"{lk}__gte": _day_start(start), f"{lk}__lt": _day_start(end + timedelta(1))})
    low, high = value  # number between, inclusive
    return Q(**{f"{lk}__gte": low, f"{lk}__lte": high})


def activity_filter(node: dict, now: datetime) -> Q:
    """The activities a behaviour condition counts (also used by "why is this contact in")."""
    # A person's activities only: a privacy proxy's open or a scanner's click is nobody's
    # behaviour, nor is the unsubscribe link's click a click (crm.models.activities).
    q = persons_q(node.get("did") or node.get("did_not"))
    if node.get("campaign") is not None:
        q &= Q(campaign_id=node["campaign"])
    if node.get("url_contains"):
        q &= Q(url__icontains=node["url_contains"])
    if node.get("form"):
        q &= Q(details__form=node["form"])
    if node.get("content_type"):
        q &= Q(details__content_type=node["content_type"])
    if node.get("within_last_days"):
        q &= Q(occurred_at__gte=_ago(now, node["within_last_days"]))
    if node.get("between"):
        start, end = (parse_day(v) for v in node["between"])
        q &= Q(occurred_at__gte=_day_start(start), occurred_at__lt=_day_start(end + timedelta(1)))
    return q


def _behaviour(node: dict, now: datetime, restrict=None) -> Q:
    exists = Exists(Activity.objects.filter(activity_filter(node, now), contact=OuterRef("pk")))
    if "did_not" in node:
        return ~Q(exists)
    mn, mx = node.get("min_count"), node.get("max_count")
    mn = 1 if mn is None else mn
    if mn == 0 and mx is None:
        return Q()
    if mn == 1 and mx is None:
        return Q(exists)
    # Count thresholds: a grouped subquery (contact_id … GROUP BY … HAVING), not correlated,
    # so a full evaluation aggregates once; an incremental one restricts it to its contacts.
    acts = Activity.objects.filter(activity_filter(node, now))
    if isinstance(restrict, Ids):
        acts = acts.filter(InIds("contact_id", restrict))
    elif restrict is not None:
        acts = acts.filter(contact_id__in=restrict)
    grouped = acts.order_by().values("contact_id").annotate(n=Count("pk"))
    q = Q(pk__in=grouped.filter(n__gte=mn).values("contact_id")) if mn > 0 else Q()
    if mx is not None:
        # contact_id is never NULL, so NOT IN is safe here.
        q &= ~Q(pk__in=grouped.filter(n__gt=mx).values("contact_id"))
    return q
