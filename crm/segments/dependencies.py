"""What a segment definition depends on, so an event that touches none of it can skip it.

Split from :mod:`.definition` (the language); used by the incremental refresh
(:mod:`.membership`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .definition import GROUP_KEYS, _day_start, _is_int, parse_day

# --- Dependencies (what can change a segment's result) --------------------------------------


@dataclass(frozen=True)
class Dependencies:
    """What a definition reads, so an event that touches none of it can skip the segment.

    ``kinds``: activity kinds its behaviour conditions count (a new activity of another kind
    cannot change the result); ``fields``: profile fields; ``refs``: segments read through
    in_segment/not_in_segment; ``opaque``: an extension condition (unknown inputs — always
    re-evaluated). Time drift of relative conditions is the periodic refresh's job.
    """

    kinds: frozenset[str] = frozenset()
    fields: frozenset[str] = frozenset()
    refs: frozenset[int] = frozenset()
    opaque: bool = False
    behaviour: tuple = ()  # the behaviour condition objects, for activity_may_count
    # Per behaviour condition: +1 if one more activity it counts can only make a contact
    # join (never leave), -1 if only leave, 0 if either (see definition_dependencies).
    polarity: tuple = ()

    def may_count(self, activity, now: datetime) -> bool:
        """Whether a new activity can change this definition's result (errs towards yes)."""
        return any(activity_may_count(node, activity, now) for node in self.behaviour)


def definition_dependencies(definition: Any) -> Dependencies:
    """Walk a stored definition once; anything unrecognised makes it ``opaque``.

    Polarity: an activity a ``did`` condition counts can only turn it from false to true
    (its count grows) unless it has a ``max_count``; for ``did_not``, true to false. Under
    an even number of ``not``s the definition follows the condition (``all``/``any`` are
    monotone), under an odd number it goes the other way.
    """
    kinds: set[str] = set()
    fields: set[str] = set()
    refs: set[int] = set()
    behaviour: list[dict] = []
    polarity: list[int] = []
    opaque = False
    stack: list[tuple[Any, int]] = [(definition, 1)]
    while stack:
        node, sign = stack.pop()
        if isinstance(node, list):
            stack.extend((child, sign) for child in node)
        elif not isinstance(node, dict):
            opaque = True
        elif any(k in node for k in GROUP_KEYS):
            stack.extend((node[k], -sign if k == "not" else sign) for k in GROUP_KEYS if k in node)
        elif "field" in node:
            fields.add(str(node["field"]))
        elif "did" in node or "did_not" in node:
            kinds.add(str(node.get("did") or node.get("did_not")))
            behaviour.append(node)
            if "did_not" in node:
                polarity.append(-sign)
            else:
                polarity.append(0 if node.get("max_count") is not None else sign)
        elif "in_segment" in node or "not_in_segment" in node:
            ref = node.get("in_segment", node.get("not_in_segment"))
            if _is_int(ref):
                refs.add(ref)
            else:
                opaque = True
        else:
            opaque = True  # an extension condition (or an empty one): inputs unknown here
    return Dependencies(
        frozenset(kinds),
        frozenset(fields),
        frozenset(refs),
        opaque,
        tuple(behaviour),
        tuple(polarity),
    )


def activity_may_count(node: dict, activity, now: datetime) -> bool:
    """Whether :func:`activity_filter` (evaluated at ``now`` or later) could select this
    activity. A behaviour condition's result is a function of the activities it selects, so
    a batch none of whose activities it could select cannot change it. Errs towards yes
    where Python and SQL could disagree (non-ASCII case folding, non-text JSON values)."""
    return activity_matcher(node, now)(activity)


def activity_matcher(node: dict, now: datetime):
    """:func:`activity_may_count` for one condition and ``now`` as a one-argument test, with
    the condition's constants worked out once (a batch tests it on many activities)."""
    kind = node.get("did") or node.get("did_not")
    campaign = node.get("campaign")
    needle = node.get("url_contains") or ""
    needle = needle.lower() if needle.isascii() else ""  # non-ASCII: SQL decides
    wanted = [(k, node[k]) for k in ("form", "content_type") if node.get(k)]
    since = now - timedelta(days=node["within_last_days"]) if node.get("within_last_days") else None
    window = None
    if node.get("between"):
        start, end = (parse_day(v) for v in node["between"])
        window = (_day_start(start), _day_start(end + timedelta(1)))

    def may_count(activity) -> bool:
        if activity.kind != kind:
            return False
        if campaign is not None and activity.campaign_id != campaign:
            return False
        if needle:
            url = activity.url or ""
            if url.isascii() and needle not in url.lower():
                return False
        if wanted:
            details = activity.details if isinstance(activity.details, dict) else {}
            for key, want in wanted:
                if key not in details or (isinstance(details[key], str) and details[key] != want):
                    return False
        if since is not None and activity.occurred_at < since:
            return False
        return window is None or window[0] <= activity.occurred_at < window[1]

    return may_count
