"""Demo data for the review register: content assets and a year of reviews."""

from datetime import timedelta

from .models import ContentAsset, Review, ReviewItem
from .services import baseline_set_manual, register_sync, review_record

ASSETS = [
    (
        "Data Security webinar (Q3)",
        ContentAsset.Type.WEBINAR,
        "https://leadcycle.example/webinars/data-security",
    ),
    (
        "Onboarding webinar",
        ContentAsset.Type.WEBINAR,
        "https://leadcycle.example/webinars/onboarding",
    ),
    (
        "State of Fintech 2026",
        ContentAsset.Type.WHITE_PAPER,
        "https://leadcycle.example/lp/state-of-fintech",
    ),
    ("Nurture playbook", ContentAsset.Type.EBOOK, "https://leadcycle.example/lp/nurture-playbook"),
    ("Pricing explained", ContentAsset.Type.VIDEO, "https://leadcycle.example/pricing"),
    ("How Acme cut churn", ContentAsset.Type.CASE_STUDY, "https://leadcycle.example/blog/acme"),
    ("Welcome email", ContentAsset.Type.EMAIL, ""),
]


def seed(ctx) -> None:
    """Assets, the register, and quarterly reviews over the demo year (with baselines)."""
    marketing = ctx.users.get("marketing")
    campaigns = ctx.shared.get("campaigns", {})
    for title, type_, url in ASSETS:
        asset, _ = ContentAsset.objects.get_or_create(
            title=title,
            defaults={"type": type_, "url": url, "owner": marketing, "created_at": ctx.start},
        )
        matching = [c for name, c in campaigns.items() if title.split()[0].lower() in name.lower()]
        asset.campaigns.add(*matching)
    register_sync(now=ctx.now)
    ReviewItem.objects.update(started_at=ctx.start, owner=marketing)
    # The old newsletter's pre-automation results, as a team would enter them by hand.
    newsletter = ReviewItem.objects.filter(
        type=ReviewItem.Type.PROGRAM, name__icontains="newsletter"
    )
    for item in newsletter:
        baseline_set_manual(
            item=item,
            figures={"click_through_rate": 0.021, "unsubscribe_rate": 0.004},
            note="2025 newsletter tool export, before automation",
        )
    items = list(ReviewItem.objects.all())
    decisions = [Review.Decision.KEEP, Review.Decision.CHANGE, Review.Decision.KEEP]
    for item in items:
        at = ctx.start + timedelta(days=item.first_review_days)
        n = 0
        # Leave roughly a third of the items overdue so the dashboard shows the feature; the
        # rest get their latest review within the last few weeks, so they are on schedule.
        leave_overdue = ctx.rng.random() < 0.35
        stop = ctx.now - timedelta(days=item.cadence_days if leave_overdue else 3)
        while at < stop:
            review_record(
                item=item,
                reviewer=marketing,
                decision=decisions[n % len(decisions)],
                notes=ctx.rng.choice(
                    [
                        "Figures within the baseline; keep as is.",
                        "CTR fell after the subject-line change; revert it.",
                        "Unsubscribe rate up: cut the cadence of the second email.",
                        "Fine. Check again next quarter.",
                    ]
                ),
                at=at,
            )
            item.refresh_from_db()
            at += timedelta(days=item.effective_cadence_days)
            if not leave_overdue and at >= stop:
                at = min(at, ctx.now - timedelta(days=ctx.rng.randint(4, 40)))
                if at <= item.last_reviewed_at:
                    break
            n += 1
    ctx.log(f"review register: {len(items)} items, {Review.objects.count()} reviews")
