"""Back-test ("what if"): replay the last N days under a draft rule set vs the current one.

Both rule sets are evaluated in the same two aggregate queries over the contacts active in
the window (activities in ``[now − days, now)``; fit on today's profile). A contact "would
have qualified" when its window score reaches the MQL threshold (and the minimum fit).
Precision compares those qualifications with what sales decided in the window: accepted
(``mql → sql``) vs rejected (``mql → recycled`` or ``disqualified``), as in METRICS.md
"MQL acceptance rate". It is an approximation by design: decay inside the window and
earlier recycle resets are not replayed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.utils import timezone

from crm.models import Activity, LifecycleTransition, Stage

from . import engine
from .models import Rule, ScoringSettings
from .rules import rule_errors
from .services import RULE_FIELDS

MAX_DAYS = 365
RULE_INPUT_FIELDS = [f for f in RULE_FIELDS if f not in ("campaign", "active_from")]


@dataclass
class Side:
    mqls: int
    accepted: int
    rejected: int

    @property
    def precision(self) -> float | None:
        decided = self.accepted + self.rejected
        return round(self.accepted / decided, 3) if decided else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mqls": self.mqls,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "precision": self.precision,
        }


def draft_rules_from(items: list[dict[str, Any]]) -> list[Rule]:
    """Unsaved rules from API/UI input; raises ``ValidationError`` listing each bad rule."""
    if not isinstance(items, list) or len(items) > 200:
        raise ValidationError({"rules": ["Send a list of at most 200 rules."]})
    rules, errors = [], {}
    for i, raw in enumerate(items):
        if not isinstance(raw, dict):
            errors[f"rules[{i}]"] = ["Each rule must be an object."]
            continue
        problems = rule_errors(raw)
        if problems:
            errors[f"rules[{i}]"] = [f"{k}: {' '.join(v)}" for k, v in problems.items()]
            continue
        data = {k: raw[k] for k in RULE_INPUT_FIELDS if k in raw and raw[k] is not None}
        data.setdefault("name", f"draft {i + 1}")
        rule = Rule(**data, campaign_id=raw.get("campaign") or None)
        if rule.enabled:
            rules.append(rule)
    if errors:
        raise ValidationError(errors)
    return rules


def backtest_run(*, draft: list[Rule], days: int, now=None) -> dict[str, Any]:
    """MQLs and precision under ``draft`` and under the enabled rules, side by side."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValidationError({"days": [f"Use a whole number of days from 1 to {MAX_DAYS}."]})
    now = now or timezone.now()
    since = now - timedelta(days=days)
    current = engine.rules_enabled()
    conf = ScoringSettings.load()
    rule_set = engine.RuleSet([*draft, *current])
    active = Q(pk__in=Activity.objects.in_period(since, now).values("contact_id"))
    # One pass over the window's activities (kind/time index or a scan), grouped by contact.
    values = engine.expected_values(
        active,
        rule_set,
        now=now,
        since=since,
        activity_scope=Q(occurred_at__gte=since, occurred_at__lt=now),
    )
    split = len(draft)

    def qualified(positions: range) -> set[int]:
        out = set()
        for contact_id, by_pos in values.items():
            total = sum(v for p, v in by_pos.items() if p in positions)
            fit = sum(
                v
                for p, v in by_pos.items()
                if p in positions and rule_set.rules[p].kind == Rule.Kind.FIT
            )
            if total >= conf.mql_threshold and (conf.min_fit is None or fit >= conf.min_fit):
                out.add(contact_id)
        return out

    draft_q = qualified(range(0, split))
    current_q = qualified(range(split, len(rule_set.rules)))
    decisions = LifecycleTransition.objects.in_period(since, now).filter(from_stage=Stage.MQL)
    accepted = set(decisions.filter(to_stage=Stage.SQL).values_list("contact_id", flat=True))
    rejected = (
        set(
            decisions.filter(to_stage__in=[Stage.RECYCLED, Stage.DISQUALIFIED]).values_list(
                "contact_id", flat=True
            )
        )
        - accepted
    )

    def side(q: set[int]) -> Side:
        return Side(mqls=len(q), accepted=len(q & accepted), rejected=len(q & rejected))

    return {
        "days": days,
        "start": since.isoformat(),
        "end": now.isoformat(),
        "threshold": conf.mql_threshold,
        "contacts_evaluated": len(values),
        "decided": {"accepted": len(accepted), "rejected": len(rejected)},
        "draft": side(draft_q).as_dict(),
        "current": side(current_q).as_dict(),
    }
