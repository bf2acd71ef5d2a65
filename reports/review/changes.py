"""What changed on a register item between two moments, listed beside its short-term trend
(METRICS.md, "Trends and review") so a reviewer sees why a figure moved.

Each kind of item reads the history its objects keep: the scoring rule set its rule
versions and settings changes; the assignment rules their changes (deleted rules too); a
program its settings, new steps and its email templates' edits; an automation rule its
program's; a content asset its publication.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from .models import ReviewItem

T = ReviewItem.Type


@dataclass(frozen=True)
class Edit:
    at: datetime
    text: str


def changes(item: ReviewItem, *, start: datetime, end: datetime) -> list[Edit]:
    """Edits to the item in [start, end), newest first."""
    reader = {
        T.PROGRAM: _program,
        T.AUTOMATION: _automation,
        T.SCORING: _scoring,
        T.ASSIGNMENT: _assignment,
        T.CONTENT: _content,
    }[item.type]
    return sorted(reader(item, start, end), key=lambda e: e.at, reverse=True)


def _by(user) -> str:
    return str(user) if user else "system"


def _scoring(item, start, end) -> Iterator[Edit]:
    from scoring.models import RuleVersion, SettingsVersion

    versions = RuleVersion.objects.filter(at__gte=start, at__lt=end).select_related("rule", "by")
    for v in versions:
        what = ", ".join(v.changed) if v.changed else "created"
        yield Edit(v.at, f"Rule “{v.rule.name}” v{v.number} ({what}) by {_by(v.by)}")
    for s in SettingsVersion.objects.filter(at__gte=start, at__lt=end).select_related("by"):
        yield Edit(s.at, f"Scoring settings: {s.summary()} by {_by(s.by)}")


def _assignment(item, start, end) -> Iterator[Edit]:
    from scoring.models import AssignmentRuleChange

    for c in AssignmentRuleChange.objects.filter(at__gte=start, at__lt=end).select_related("by"):
        name = c.snapshot.get("name", "")
        yield Edit(c.at, f"Assignment rule “{name}” {c.summary()} by {_by(c.by)}")


def _program(item, start, end) -> Iterator[Edit]:
    from nurture.models import Program

    program = Program.objects.filter(pk=item.object_id).first()
    if program is not None:
        yield from _program_edits(program, start, end)


def _automation(item, start, end) -> Iterator[Edit]:
    """The program's edits: its steps and emails are what the rule's entrants receive."""
    from nurture.models import Trigger

    trigger = Trigger.objects.select_related("program").filter(pk=item.object_id).first()
    if trigger is not None:
        yield from _program_edits(trigger.program, start, end)


def _program_edits(program, start, end) -> Iterator[Edit]:
    from nurture.models import EmailTemplate

    if start <= program.updated_at < end:
        yield Edit(program.updated_at, "Program settings changed")
    for st in program.steps.filter(created_at__gte=start, created_at__lt=end):
        yield Edit(st.created_at, f"Step {st.position} added ({st.get_kind_display().lower()})")
    templates = EmailTemplate.objects.filter(
        steps__program=program, updated_at__gte=start, updated_at__lt=end
    ).distinct()
    for t in templates:
        yield Edit(t.updated_at, f"Email template “{t.name}” edited")


def _content(item, start, end) -> Iterator[Edit]:
    from .models import ContentAsset

    asset = ContentAsset.objects.filter(pk=item.object_id).first()
    if asset and start <= asset.created_at < end:
        yield Edit(asset.created_at, "Asset published")
