"""Companies, campaigns and their cost entries."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction

from .. import events
from ..models import Campaign, CampaignCost, Company

COMPANY_FIELDS = ("name", "domain", "industry", "size_band", "country", "owner")
CAMPAIGN_FIELDS = (
    "name",
    "channel",
    "type",
    "status",
    "start_date",
    "end_date",
    "budget",
    "owner",
    "goal_action",
)
COST_FIELDS = ("period_start", "period_end", "amount", "category", "shared", "split", "note")


def _assign(obj, allowed: Iterable[str], fields: dict) -> set[str]:
    unknown = set(fields) - set(allowed)
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    changed = {k for k, v in fields.items() if getattr(obj, k) != v}
    for name in changed:
        setattr(obj, name, fields[name])
    return changed


def company_create(*, by=None, **fields) -> Company:
    company = Company()
    _assign(company, COMPANY_FIELDS, fields)
    company.full_clean()
    company.save()
    return company


def company_update(*, company: Company, by=None, **fields) -> Company:
    """Edit a company; its contacts' "company" data changed for segments and scoring."""
    changed = _assign(company, COMPANY_FIELDS, fields)
    if changed:
        company.full_clean()
        with transaction.atomic():
            company.save()
            contact_ids = list(company.contacts.values_list("pk", flat=True))
            events.contacts_changed(contact_ids, fields={"company"})
    return company


def campaign_create(*, by=None, **fields) -> Campaign:
    campaign = Campaign(owner=by if "owner" not in fields else None)
    _assign(campaign, CAMPAIGN_FIELDS, fields)
    campaign.full_clean()
    campaign.save()
    return campaign


def campaign_update(*, campaign: Campaign, by=None, **fields) -> Campaign:
    if _assign(campaign, CAMPAIGN_FIELDS, fields):
        campaign.full_clean()
        campaign.save()
    return campaign


def _check_sharing(cost: CampaignCost, shared_with: list[Campaign]) -> None:
    """Only labour/technology may be shared; sharing needs other campaigns (METRICS.md)."""
    errors: dict[str, list[str]] = {}
    if not cost.shared:
        if shared_with:
            errors["shared_with"] = ["Mark the cost as shared to split it with other campaigns."]
        if cost.split != CampaignCost.Split.EQUAL:
            errors["split"] = ["Only a shared cost has a split."]
    else:
        if not shared_with:
            errors["shared_with"] = ["Choose the campaigns that share this cost."]
        if any(c.pk == cost.campaign_id for c in shared_with):
            errors["shared_with"] = ["A campaign cannot share a cost with itself."]
    if errors:
        raise ValidationError(errors)


def cost_create(
    *, campaign: Campaign, by=None, shared_with: Iterable[Campaign] = (), **fields
) -> CampaignCost:
    """Add a cost entry; a shared one is split equally or by emails sent across campaigns."""
    shared_with = list(shared_with)
    cost = CampaignCost(campaign=campaign)
    _assign(cost, COST_FIELDS, fields)
    cost.full_clean()
    _check_sharing(cost, shared_with)
    with transaction.atomic():
        cost.save()
        cost.shared_with.set(shared_with)
    return cost


def cost_update(
    *, cost: CampaignCost, by=None, shared_with: Iterable[Campaign] | None = None, **fields
) -> CampaignCost:
    _assign(cost, COST_FIELDS, fields)
    cost.full_clean()
    shared = list(cost.shared_with.all()) if shared_with is None else list(shared_with)
    if not cost.shared:
        shared = [] if shared_with is None else shared
    _check_sharing(cost, shared)
    with transaction.atomic():
        cost.save()
        cost.shared_with.set(shared)
    return cost


def cost_delete(*, cost: CampaignCost, by=None) -> None:
    cost.delete()
