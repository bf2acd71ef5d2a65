"""What scoring adds to CRM pages (settings CONTACT_*_PROVIDERS, see crm.extensions)."""

from django.template.loader import render_to_string

from crm.extensions import Panel, TimelineEntry

from . import queries


def panel(request, contact) -> Panel:
    """The score breakdown: fit vs engagement and the points per rule (one query)."""
    breakdown = queries.score_breakdown(contact_id=contact.pk)
    # No request context: the panel needs no context processors (and their queries).
    html = render_to_string("scoring/_panel.html", {"b": breakdown, "contact": contact})
    # The breakdown's total: the ledger sum, which the cached score always equals.
    return Panel(title=f"Score {breakdown['score']}", html=html)


def timeline(contact, *, before, limit) -> list[TimelineEntry]:
    """Score changes, newest first (one query)."""
    return [
        TimelineEntry(
            at=e.at,
            kind="score",
            title=f"Score {e.points:+d}: {e.rule.name if e.rule else 'adjustment'}",
            detail=e.get_reason_display(),
        )
        for e in queries.ledger_entries(contact_id=contact.pk, before=before, limit=limit)
    ]


def summaries(contact_ids) -> dict[int, list[str]]:
    """ "Why it qualified" for list pages such as the MQL queue (one query per page)."""
    return {
        cid: ["Why: " + ", ".join(lines)]
        for cid, lines in queries.why_qualified(contact_ids=list(contact_ids)).items()
    }
