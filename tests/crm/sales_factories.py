"""Helpers for the sales tests: MQLs made the way scoring makes them (through lifecycle)."""

from datetime import timedelta

from django.utils import timezone

from crm import lifecycle
from crm.models import Stage
from crm.services import contact_create
from tests.factories import CompanyFactory, ContactFactory, score_set


def make_mql(*, hours_ago: float = 1, owner=None, score: int = 50, company=None, **fields):
    """A contact that scoring moved to ``mql`` ``hours_ago`` hours ago."""
    now = timezone.now()
    email = fields.pop("email", None) or ContactFactory.build().email
    contact = contact_create(
        email=email,
        created_at=now - timedelta(hours=hours_ago + 24),
        owner=owner,
        company=company if company is not None else CompanyFactory(),
        **fields,
    )
    score_set(contact, score)
    lifecycle.stage_change(
        contact=contact,
        to_stage=Stage.MQL,
        at=now - timedelta(hours=hours_ago),
        by_system="scoring",
    )
    contact.refresh_from_db()
    return contact
