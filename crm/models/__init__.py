"""CRM core models, one module per subdomain."""

from .activities import Activity, LifecycleTransition, Reopening
from .campaigns import Campaign, CampaignCost, CampaignMember
from .choices import (
    ActivityKind,
    Channel,
    ConsentBasis,
    EmailStatus,
    Source,
    Stage,
)
from .contacts import Company, Contact, ContactScore, Notification, UserProfile
from .deals import Deal, RejectionReason
from .queue import QueuedBatch
from .segments import Segment, SegmentChange, SegmentMembership, SegmentVersion

__all__ = [
    "Activity",
    "ActivityKind",
    "Campaign",
    "CampaignCost",
    "CampaignMember",
    "Channel",
    "Company",
    "ConsentBasis",
    "Contact",
    "ContactScore",
    "Deal",
    "EmailStatus",
    "LifecycleTransition",
    "Notification",
    "QueuedBatch",
    "RejectionReason",
    "Reopening",
    "Segment",
    "SegmentChange",
    "SegmentMembership",
    "SegmentVersion",
    "Source",
    "Stage",
    "UserProfile",
]
