"""Code that runs INSIDE a live deployment (``manage.py shell``), called by the tests.

Each function uses the application's own services, so the data is what production would
hold; each returns something JSON-serialisable.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta

from django.db.models import Count, Q, Sum
from django.utils import timezone


def drip(*, n: int, prefix: str = "c") -> dict:
    """``n`` new contacts enrolled in a fresh two-email program (email, email, end)."""
    from crm.models import Campaign, Contact
    from crm.services.base import contacts_create_bulk
    from nurture.models import EmailTemplate, Program, Step
    from nurture.services.enrollment import contacts_enroll

    campaign = Campaign.objects.create(
        name=f"Reliability {prefix}", status="active", start_date=timezone.localdate()
    )
    program = Program.objects.create(
        name=f"Two emails {prefix}", campaign=campaign, status=Program.Status.ACTIVE
    )
    for position, subject in enumerate(["Step 1", "Step 2"], start=1):
        template = EmailTemplate.objects.create(
            name=subject,
            subject=subject,
            text_body="Hi {{ contact.first_name }}, https://example.com/guide",
            html_body='<p>Hi {{ contact.first_name }}</p><a href="https://example.com/g">Guide</a>',
        )
        Step.objects.create(
            program=program, position=position, kind=Step.Kind.EMAIL, template=template
        )
    Step.objects.create(program=program, position=3, kind=Step.Kind.END)
    contacts_create_bulk(
        rows=[{"email": f"{prefix}{i}@example.com", "first_name": f"N{i}"} for i in range(n)],
        by_system="reliability",
    )
    ids = list(
        Contact.objects.filter(email__startswith=prefix, email__endswith="@example.com")
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    entered = contacts_enroll(program=program, contact_ids=ids, source="manual")
    return {"program": program.pk, "entered": entered, "contacts": len(ids)}


def drip_state(*, program: int) -> dict:
    """How far the program got, straight from the tables."""
    from crm.models import Activity
    from nurture.models import EmailSend, Enrollment

    sends = EmailSend.objects.filter(program_id=program)
    return {
        "sent": sends.filter(status="sent").count(),
        "other": sends.exclude(status="sent").count(),
        "duplicate_steps": sends.values("enrollment_id", "step_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count(),
        "live": Enrollment.objects.filter(program_id=program).live().count(),
        "completed": Enrollment.objects.filter(program_id=program, state="completed").count(),
        "activities": Activity.objects.filter(kind="email_sent", details__program=program).count(),
        "activity_message_ids": Activity.objects.filter(kind="email_sent", details__program=program)
        .values("message_id")
        .distinct()
        .count(),
        "unmatched_activities": Activity.objects.filter(kind="email_sent", details__program=program)
        .exclude(message_id__in=sends.values("message_id"))
        .count(),
    }


def rules_create() -> list[int]:
    """Engagement rules whose worth does not depend on the clock (exact comparison)."""
    from scoring.services import rule_save

    specs = [
        {"name": "Visit", "activity_kind": "page_visit", "frequency": "every_time", "points": 2},
        {"name": "Form", "activity_kind": "form_submitted", "frequency": "once_ever", "points": 9},
        {
            "name": "Clicks",
            "activity_kind": "email_clicked",
            "frequency": "every_time",
            "cap": 3,
            "points": 4,
        },
    ]
    return [rule_save(data={"kind": "engagement", **spec}).pk for spec in specs]


def rule_points_set(*, name: str, points: int) -> None:
    from scoring.models import Rule
    from scoring.services import rule_save

    rule_save(rule=Rule.objects.get(name=name), data={"points": points})


def ingest(*, tag: str, batches: int, size: int, seed: int, pause: float = 0.0) -> dict:
    """Record ``batches`` random batches through ``crm.ingest`` (as the API does)."""
    import time

    from crm.ingest import activities_record
    from crm.models import Contact

    rng = random.Random(seed)
    ids = list(Contact.objects.values_list("pk", flat=True))
    kinds = ["page_visit", "page_visit", "form_submitted", "email_clicked"]
    created = 0
    for b in range(batches):
        now = timezone.now()
        items = [
            {
                "kind": rng.choice(kinds),
                "contact": rng.choice(ids),
                "occurred_at": now - timedelta(seconds=rng.randint(1, 3600)),
                "external_id": f"{tag}-{b}-{i}",
                "url": "https://example.com/pricing",
            }
            for i in range(size)
        ]
        created += activities_record(items=items, source="api").created
        if pause:
            time.sleep(pause)
    return {"created": created}


def rescore_start() -> int:
    from scoring.services import rescore_start as start

    return start().pk


def rescore_runs() -> list[dict]:
    from scoring.models import RescoreRun

    return list(RescoreRun.objects.values("pk", "status", "processed", "total", "error"))


def scores_check() -> dict:
    """Compare the ledger and the cached scores with a fresh full computation."""
    from crm.models import Contact
    from scoring import engine
    from scoring.models import LedgerEntry

    rules = engine.rules_enabled()
    rule_set = engine.RuleSet(list(rules))
    expected = engine.expected_values(Q(), rule_set, now=timezone.now())
    want: dict[tuple[int, int], int] = {}
    for contact_id, values in expected.items():
        for position, points in values.items():
            want[(contact_id, rule_set.rules[position].pk)] = points
    have: dict[tuple[int, int], int] = defaultdict(int)
    for contact_id, rule_id, points in (
        LedgerEntry.objects.exclude(reason="recycle_reset")
        .values_list("contact_id", "rule_id")
        .annotate(s=Sum("points"))
    ):
        if points:
            have[(contact_id, rule_id)] = points
    ledger_mismatch = [
        [k[0], k[1], want.get(k, 0), have.get(k, 0)]
        for k in set(want) | set(have)
        if want.get(k, 0) != have.get(k, 0)
    ]
    totals = dict(
        LedgerEntry.objects.values_list("contact_id").annotate(s=Sum("points")).order_by()
    )
    score_mismatch = [
        [pk, score, totals.get(pk, 0)]
        for pk, score in Contact.objects.values_list("pk", "scorecard__score")
        if score != totals.get(pk, 0)
    ]
    duplicated = (
        LedgerEntry.objects.filter(reason="activity", activity__isnull=False)
        .values("contact_id", "rule_id", "activity_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    return {
        "pairs": len(want),
        "scored_contacts": Contact.objects.filter(scorecard__score__gt=0).count(),
        "ledger_mismatch": ledger_mismatch[:20],
        "ledger_mismatch_count": len(ledger_mismatch),
        "score_mismatch": score_mismatch[:20],
        "score_mismatch_count": len(score_mismatch),
        "duplicated_activity_entries": duplicated,
    }


def activities_by_external_id(*, prefix: str) -> dict:
    from crm.models import Activity

    qs = Activity.objects.filter(external_id__startswith=prefix)
    return {
        "rows": qs.count(),
        "distinct": qs.values("external_id").distinct().count(),
    }


def api_token() -> str:
    """A marketing user's API token (the role that may POST activities)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from rest_framework.authtoken.models import Token

    user, _ = get_user_model().objects.get_or_create(username="loader")
    user.groups.add(Group.objects.get(name="marketing"))
    return Token.objects.get_or_create(user=user)[0].key


def contacts_create(*, n: int, prefix: str) -> list[int]:
    from crm.models import Contact
    from crm.services.base import contacts_create_bulk

    contacts_create_bulk(
        rows=[{"email": f"{prefix}{i}@example.com"} for i in range(n)], by_system="reliability"
    )
    return list(
        Contact.objects.filter(email__startswith=prefix).order_by("pk").values_list("pk", flat=True)
    )
