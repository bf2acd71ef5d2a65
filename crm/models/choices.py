"""Vocabularies shared by models, segments, scoring and reports.

Kinds and stages are data (``TextChoices``) so rules and segment definitions can name them.
"""

from django.db import models


class Stage(models.TextChoices):
    LEAD = "lead", "Lead"
    MQL = "mql", "MQL"
    SQL = "sql", "SQL"
    OPPORTUNITY = "opportunity", "Opportunity"
    CUSTOMER = "customer", "Customer"
    RECYCLED = "recycled", "Recycled"
    DISQUALIFIED = "disqualified", "Disqualified"
    CHURNED = "churned", "Churned"


# The forward funnel, in order; recycled/disqualified/churned sit beside it.
FUNNEL_STAGES = [Stage.LEAD, Stage.MQL, Stage.SQL, Stage.OPPORTUNITY, Stage.CUSTOMER]
OPEN_STAGES = [Stage.LEAD, Stage.MQL, Stage.SQL, Stage.OPPORTUNITY]


class ActivityKind(models.TextChoices):
    EMAIL_SENT = "email_sent", "Email sent"
    EMAIL_DELIVERED = "email_delivered", "Email delivered"
    EMAIL_OPENED = "email_opened", "Email opened"
    EMAIL_CLICKED = "email_clicked", "Email clicked"
    EMAIL_BOUNCED = "email_bounced", "Email bounced"
    EMAIL_UNSUBSCRIBED = "email_unsubscribed", "Unsubscribed"
    EMAIL_COMPLAINED = "email_complained", "Spam complaint"
    PAGE_VISIT = "page_visit", "Page visit"
    FORM_SUBMITTED = "form_submitted", "Form submitted"
    LANDING_PAGE_CONVERSION = "landing_page_conversion", "Landing-page conversion"
    CONTENT_DOWNLOAD = "content_download", "Content download"
    WEBINAR_REGISTERED = "webinar_registered", "Webinar registered"
    WEBINAR_ATTENDED = "webinar_attended", "Webinar attended"
    EVENT_REGISTERED = "event_registered", "Event registered"
    EVENT_ATTENDED = "event_attended", "Event attended"
    DEMO_REQUESTED = "demo_requested", "Demo requested"
    CART_ABANDONED = "cart_abandoned", "Cart abandoned"
    SOCIAL_LIKE = "social_like", "Social like"
    SOCIAL_SHARE = "social_share", "Social share"
    SOCIAL_COMMENT = "social_comment", "Social comment"
    SOCIAL_REPOST = "social_repost", "Social repost"
    CSAT_ANSWER = "csat_answer", "CSAT answer"
    PURCHASE = "purchase", "Purchase"


EMAIL_KINDS = {
    ActivityKind.EMAIL_SENT,
    ActivityKind.EMAIL_DELIVERED,
    ActivityKind.EMAIL_OPENED,
    ActivityKind.EMAIL_CLICKED,
    ActivityKind.EMAIL_BOUNCED,
    ActivityKind.EMAIL_UNSUBSCRIBED,
    ActivityKind.EMAIL_COMPLAINED,
}
# The kinds of activity that show a person engaging (METRICS.md, "re-opened leads"); sends,
# deliveries, bounces and complaints are not engagement. An engagement is also not a
# machine's nor a click on the unsubscribe link: crm.models.activities.engagement_q.
ENGAGEMENT_KINDS = {
    ActivityKind.EMAIL_OPENED,
    ActivityKind.EMAIL_CLICKED,
    ActivityKind.PAGE_VISIT,
    ActivityKind.FORM_SUBMITTED,
    ActivityKind.LANDING_PAGE_CONVERSION,
    ActivityKind.CONTENT_DOWNLOAD,
    ActivityKind.WEBINAR_REGISTERED,
    ActivityKind.WEBINAR_ATTENDED,
    ActivityKind.EVENT_REGISTERED,
    ActivityKind.EVENT_ATTENDED,
    ActivityKind.DEMO_REQUESTED,
    ActivityKind.CART_ABANDONED,
    ActivityKind.SOCIAL_LIKE,
    ActivityKind.SOCIAL_SHARE,
    ActivityKind.SOCIAL_COMMENT,
    ActivityKind.SOCIAL_REPOST,
    ActivityKind.PURCHASE,
}
# Activities that may create an unknown contact (a person told us their email address).
SELF_IDENTIFYING_KINDS = {
    ActivityKind.PAGE_VISIT,
    ActivityKind.FORM_SUBMITTED,
    ActivityKind.LANDING_PAGE_CONVERSION,
    ActivityKind.CONTENT_DOWNLOAD,
    ActivityKind.WEBINAR_REGISTERED,
    ActivityKind.WEBINAR_ATTENDED,
    ActivityKind.EVENT_REGISTERED,
    ActivityKind.EVENT_ATTENDED,
    ActivityKind.DEMO_REQUESTED,
}
SOCIAL_KINDS = {
    ActivityKind.SOCIAL_LIKE,
    ActivityKind.SOCIAL_SHARE,
    ActivityKind.SOCIAL_COMMENT,
    ActivityKind.SOCIAL_REPOST,
}


class EmailStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed"
    HARD_BOUNCED = "hard_bounced", "Hard-bounced"
    COMPLAINED = "complained", "Complained"


class ConsentBasis(models.TextChoices):
    NONE = "none", "No consent recorded"
    CONSENT = "consent", "Consent"
    LEGITIMATE_INTEREST = "legitimate_interest", "Legitimate interest"
    CONTRACT = "contract", "Contract"


class Source(models.TextChoices):
    WEB_FORM = "web_form", "Web form"
    IMPORT = "import", "Import"
    EVENT = "event", "Event"
    PAID = "paid", "Paid"
    SOCIAL = "social", "Social"
    REFERRAL = "referral", "Referral"
    ORGANIC = "organic", "Organic"
    API = "api", "API"
    OTHER = "other", "Other"


class Channel(models.TextChoices):
    EMAIL = "email", "Email nurture"
    WEBINAR = "webinar", "Webinar"
    EVENT = "event", "Event"
    PAID = "paid", "Paid ads"
    CONTENT = "content", "Content"
    SOCIAL = "social", "Social"
    OTHER = "other", "Other"
