"""What scoring holds about a contact, for crm.privacy (settings.CONTACT_DATA_PROVIDERS).

The score ledger holds points, times, rules and activity links, nothing that names the
person, so erasure keeps it whole: the score and every "points per rule" figure stay.
"""

from __future__ import annotations

from .models import LedgerEntry


def export(contact) -> dict:
    return {
        "ledger": [
            {**row, "at": row["at"].isoformat()}
            for row in LedgerEntry.objects.filter(contact=contact)
            .order_by("at", "id")
            .values("id", "points", "at", "reason", "rule_id", "rule__name", "activity_id")
        ]
    }


def erase(contact) -> None:
    """Nothing to scrub: ledger rows carry no personal data (see the module docstring)."""
