"""API filters mirror the UI's: the same FilterSets (crm.filters) serve both."""

from crm.filters import ActivityFilter, CampaignFilter, CompanyFilter, ContactFilter

__all__ = ["ActivityFilter", "CampaignFilter", "CompanyFilter", "ContactFilter"]
