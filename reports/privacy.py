"""What reports holds about a contact, for crm.privacy (settings.CONTACT_DATA_PROVIDERS).

Reports keeps derived counts, not personal data, with one exception: the landing-page
facts copy each visit's URL, and a URL can carry a person (``?email=…``). Erasure strips
query strings and fragments from the contact's activities before it calls providers, so
rebuilding the contact's landing facts from those activities drops the copies while every
report total stays (the page is kept, see crm.privacy._activities_scrub).
"""

from __future__ import annotations

from .csat_facts import csat_days_recount
from .landing_facts import landing_facts_rebuild


def export(contact) -> dict:
    """Nothing of the person's own: the facts are derived from the exported activities."""
    return {}


def erase(contact) -> None:
    landing_facts_rebuild(contact_ids=[contact.pk])
    csat_days_recount(contact_id=contact.pk)  # the scrub cleared the answers' details
