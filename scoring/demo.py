"""Demo data for scoring, called by `manage.py seed_demo` (settings.DEMO_SEEDERS).

Rules a B2B marketing team would plausibly run, a threshold, assignment rules, then the
year's score history: the ledger replayed week by week as live scoring would have written
it (``replay.ledger_replay``: points dated at their activities, decay and expiry at the
week they happened, recycle resets at the recycle), so a past month's scores are what they
were then. A full rescore follows; after the replay it has nothing to adjust, and it is
all there is for a demo too big to replay (``SeedContext.history``: one dated at the end).
Neither hands anybody off (the CRM demo already wrote a year of MQL history); the leads the
rules put over the threshold are then handed off as live scoring would have, each dated at
the gain that took it over (``backfill.mqls_catch_up``), so that no lead sits over the
threshold.
"""

from __future__ import annotations

from crm.models.choices import ActivityKind as K

from . import backfill, replay, services
from .models import AssignmentRule, Rule, ScoringSettings

E, F, N = Rule.Kind.ENGAGEMENT, Rule.Kind.FIT, Rule.Kind.NEGATIVE
FQ = Rule.Frequency
FIT_RULES = [
    ("Senior title: VP", "job_title", "contains", "VP", 15),
    ("Senior title: Director", "job_title", "contains", "Director", 12),
    ("Senior title: Head of", "job_title", "starts_with", "Head of", 10),
    ("C-level", "job_title", "in", "CEO, CTO, CFO", 15),
    ("Target industry", "company.industry", "in", "Software, Fintech", 10),
    ("Mid-market or larger", "company.size_band", "in", "51-200, 201-1000, 1000+", 8),
    ("Free-mail address", "email_domain", "in",
     "mail.example, inbox.example, post.example, webmail.example", -10),
    ("Student", "job_title", "equals", "Student", -25),
    ("Country not served", "country", "in", "RU, BY, KP, IR", -30),
]  # fmt: skip
ENGAGEMENT_RULES = [
    # name, kind, extra filters, points, frequency, cap, fade
    ("Pricing page visit", K.PAGE_VISIT, {"url_contains": "/pricing"}, 10, FQ.ONCE_PER_DAY, 5,
     {"half_life_days": 30}),
    ("Product page visit", K.PAGE_VISIT, {"url_contains": "/product"}, 3, FQ.ONCE_PER_DAY, 5,
     {"expire_after_days": 90}),
    ("Any page visit", K.PAGE_VISIT, {}, 1, FQ.ONCE_PER_DAY, 10, {"expire_after_days": 30}),
    ("Demo requested", K.DEMO_REQUESTED, {}, 30, FQ.ONCE_PER_WEEK, 2, {}),
    ("Webinar attended", K.WEBINAR_ATTENDED, {}, 15, FQ.EVERY_TIME, 3,
     {"expire_after_days": 180}),
    ("Webinar registered", K.WEBINAR_REGISTERED, {}, 5, FQ.EVERY_TIME, 3,
     {"expire_after_days": 90}),
    ("Event attended", K.EVENT_ATTENDED, {}, 15, FQ.EVERY_TIME, 2, {"expire_after_days": 180}),
    ("Contact-us form", K.FORM_SUBMITTED, {"form": "contact-us"}, 20, FQ.ONCE_PER_WEEK, 2, {}),
    ("Trial signup", K.FORM_SUBMITTED, {"form": "trial-signup"}, 25, FQ.ONCE_EVER, None, {}),
    ("White paper download", K.CONTENT_DOWNLOAD, {"content_type": "white paper"}, 8,
     FQ.EVERY_TIME, 3, {"expire_after_days": 120}),
    ("Content download", K.CONTENT_DOWNLOAD, {}, 4, FQ.EVERY_TIME, 5,
     {"expire_after_days": 90}),
    ("Email click", K.EMAIL_CLICKED, {}, 3, FQ.EVERY_TIME, 5, {"half_life_days": 45}),
    ("Social share", K.SOCIAL_SHARE, {}, 2, FQ.ONCE_PER_WEEK, 3, {"expire_after_days": 60}),
]  # fmt: skip
NEGATIVE_RULES = [
    ("Unsubscribed", Rule.Negative.UNSUBSCRIBED, None, -20),
    ("Hard bounce", Rule.Negative.HARD_BOUNCED, None, -30),
    ("No activity for 60 days", Rule.Negative.INACTIVE, 60, -10),
]


def seed(ctx) -> None:
    """Rules, settings and assignment rules; then one full rescore."""
    admin = ctx.users.get("admin")
    if Rule.objects.exists():
        ctx.log("scoring: rules already present, rescoring only")
    else:
        for name, field, operator, value, points in FIT_RULES:
            services.rule_save(
                data={"name": name, "kind": F, "field": field, "operator": operator,
                      "value": value, "points": points},
                by=admin,
            )  # fmt: skip
        for name, kind, extra, points, frequency, cap, fade in ENGAGEMENT_RULES:
            services.rule_save(
                data={"name": name, "kind": E, "activity_kind": kind, "points": points,
                      "frequency": frequency, "cap": cap, **extra, **fade},
                by=admin,
            )  # fmt: skip
        for name, negative, days, points in NEGATIVE_RULES:
            services.rule_save(
                data={"name": name, "kind": N, "negative": negative, "inactive_days": days,
                      "points": points},
                by=admin,
            )  # fmt: skip
        services.settings_update(
            data={"mql_threshold": 80, "min_fit": 0, "recycle_policy": "halve"}, by=admin
        )
        sales = ctx.users.get("sales")
        sales2 = ctx.users.get("sales2")
        if sales and sales2:
            AssignmentRule.objects.bulk_create(
                [
                    AssignmentRule(order=1, name="DACH", countries="DE,AT,CH", user=sales2),
                    AssignmentRule(order=2, name="Enterprise", size_band="1000+", user=sales),
                    AssignmentRule(order=3, name="Fintech", industry="Fintech", user=sales2),
                ]
            )
    replayed = _history_replay(ctx)
    # As of the history's end, so the clock between it and this line changes nothing.
    run = services.scores_rescore_all(by=admin, hand_off=False, now=ctx.now)
    # Owners are assigned, but no "new MQL" notices: these hand-offs are dated in the past.
    handed = backfill.mqls_catch_up(now=ctx.now, notify=False, ledger_dated=replayed)
    conf = ScoringSettings.load()
    ctx.log(
        f"scoring: {Rule.objects.count()} rules, MQL at {conf.mql_threshold}, "
        f"rescored {run.processed} contacts ({run.entries_created} ledger entries), "
        f"{handed} leads over the threshold handed off"
    )


def _history_replay(ctx) -> bool:
    """Replay the score ledger over the demo's year (when ``ctx.history``); whether it did.

    Only the contacts the CRM seeder just made (``contact_id_range``; all contacts when
    it did not run), whose ledgers are empty: contacts of an earlier run keep theirs and
    are left to the rescore."""
    if not ctx.history:
        ctx.log("scoring: history replay skipped (--no-history); one rescore dates it all now")
        return False
    stats = replay.ledger_replay(
        start=ctx.start, end=ctx.now, id_range=ctx.shared.get("contact_id_range")
    )
    ctx.log(f"scoring: ledger replayed in {stats.steps} steps ({stats.entries} entries)")
    return True
