"""What changed on a register item between two moments, listed beside its short-term trend
(METRICS.md, "Trends and review") so a reviewer sees why a figure moved.

Each kind of item reads the history its objects keep: the scoring rule set its rule
versions and settings changes; the assignment rules their changes (deleted rules too);
a program its history (settings, status, steps, entry rules), its email templates' edits
and the definitions of the segments that decide who enters it (its audience, its segment
triggers); an automation
rule its program's, with its own segment; a content asset its publication.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db.models import OuterRef, Subquery

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
        # The first version lists every field (it is diffed against nothing); a later one
        # with no field changed was a save of the same values, which changed nothing.
        if v.number > 1 and not v.changed:
            continue
        what = "created" if v.number == 1 else ", ".join(v.changed)
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
    if program is None:
        return
    segment_ids = set(
        program.triggers.filter(segment__isnull=False).values_list("segment_id", flat=True)
    )
    yield from _program_edits(program, start, end)
    yield from _segment_edits({program.audience_id, *segment_ids} - {None}, start, end)


def _automation(item, start, end) -> Iterator[Edit]:
    """The program's edits (its steps and emails are what the rule's entrants receive),
    and the definitions of the segments deciding who the rule lets in."""
    from nurture.models import Trigger

    trigger = Trigger.objects.select_related("program").filter(pk=item.object_id).first()
    if trigger is None:
        return
    yield from _program_edits(trigger.program, start, end)
    segment_ids = {trigger.program.audience_id, trigger.segment_id} - {None}
    yield from _segment_edits(segment_ids, start, end)


def _program_edits(program, start, end) -> Iterator[Edit]:
    """The program's own history (nurture.ProgramChange: settings, status, steps added,
    edited, moved or deleted, entry rules added or removed) and its emails' edits."""
    from nurture.models import EmailTemplate

    for c in program.changes.filter(at__gte=start, at__lt=end).select_related("by"):
        yield Edit(c.at, f"{c.summary} by {_by(c.by)}")
    templates = EmailTemplate.objects.filter(
        steps__program=program, updated_at__gte=start, updated_at__lt=end
    ).distinct()
    for t in templates:
        yield Edit(t.updated_at, f"Email template “{t.name}” edited")


def _segment_edits(segment_ids: Iterable[int], start, end) -> Iterator[Edit]:
    """Saves of these segments that changed their definition.

    Not a segment's first version (making a segment changes no program: using it does, a
    program settings change) nor a save with the definition unchanged (a rename writes a
    version too, and changes no one's membership).
    """
    from crm.models import SegmentVersion

    earlier = SegmentVersion.objects.filter(
        segment_id=OuterRef("segment_id"), version=OuterRef("version") - 1
    )
    versions = (
        SegmentVersion.objects.filter(
            segment_id__in=list(segment_ids),
            version__gt=1,
            created_at__gte=start,
            created_at__lt=end,
        )
        .annotate(before=Subquery(earlier.values("definition")[:1]))
        .select_related("segment", "created_by")
    )
    for v in versions:
        if v.before != v.definition:
            yield Edit(
                v.created_at,
                f"Segment “{v.segment.name}” definition changed (v{v.version}) "
                f"by {_by(v.created_by)}",
            )


def _content(item, start, end) -> Iterator[Edit]:
    from .models import ContentAsset

    asset = ContentAsset.objects.filter(pk=item.object_id).first()
    if asset and start <= asset.created_at < end:
        yield Edit(asset.created_at, "Asset published")
