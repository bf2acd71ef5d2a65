"""Writes that span models (Style: keyword-only services that own their transaction).

One module per subdomain; everything is re-exported here so callers import
``crm.services.<name>``.
"""

from .base import contact_create, contacts_create_bulk
from .campaigns import (
    campaign_create,
    campaign_update,
    company_create,
    company_update,
    cost_create,
    cost_delete,
    cost_update,
)
from .contacts import (
    UpsertResult,
    contact_merge,
    contact_row_clean,
    contact_update,
    contacts_assign_owner,
    contacts_upsert,
)

__all__ = [
    "UpsertResult",
    "campaign_create",
    "campaign_update",
    "company_create",
    "company_update",
    "contact_create",
    "contact_merge",
    "contact_row_clean",
    "contact_update",
    "contacts_assign_owner",
    "contacts_create_bulk",
    "contacts_upsert",
    "cost_create",
    "cost_delete",
    "cost_update",
]
