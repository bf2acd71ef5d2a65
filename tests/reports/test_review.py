"""The review register: cadence, the scoring alert, baselines, immutable reviews, exports."""

import io
from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from crm import ingest, lifecycle
from crm.models import Stage
from crm.services import contact_create
from reports.review import services
from reports.review.digest import review_digest_send
from reports.review.export import _sheet_rows
from reports.review.models import ContentAsset, Review, ReviewItem
from reports.review.register import mql_acceptance_rate, register_rows
from reports.tasks import review_digest
from tests.factories import UserFactory
from tests.nurture.factories import ProgramFactory, TriggerFactory
from tests.reliability.smtp import RefusingSMTPServer

pytestmark = pytest.mark.django_db

T = ReviewItem.Type


def make_item(type=T.CONTENT, days_ago=100, **kw):
    first, every = ReviewItem.DEFAULT_CADENCE[type]
    defaults = {
        "name": f"{type} item",
        "started_at": timezone.now() - timedelta(days=days_ago),
        "first_review_days": first,
        "cadence_days": every,
    }
    defaults.update(kw)
    return ReviewItem.objects.create(type=type, **defaults)


def decide(n_accepted, n_rejected, at=None):
    """Create MQLs and decide them: accepted → sql, rejected → recycled."""
    at = at or timezone.now() - timedelta(days=5)
    for i in range(n_accepted + n_rejected):
        c = contact_create(
            email=f"d{i}-{n_accepted}-{n_rejected}@example.com", created_at=at - timedelta(days=2)
        )
        lifecycle.stage_change(contact=c, to_stage=Stage.MQL, at=at - timedelta(days=1))
        to = Stage.SQL if i < n_accepted else Stage.RECYCLED
        lifecycle.stage_change(contact=c, to_stage=to, at=at)


def test_automation_rules_are_due_30_days_after_they_start_then_every_90():
    item = make_item(T.AUTOMATION, days_ago=10)
    assert item.next_due() == item.started_at + timedelta(days=30)
    item.last_reviewed_at = item.started_at + timedelta(days=30)
    assert item.next_due() == item.started_at + timedelta(days=120)


def test_a_program_not_reviewed_for_90_days_is_overdue():
    due = make_item(T.PROGRAM, days_ago=91, object_id=1)
    fine = make_item(T.PROGRAM, days_ago=89, object_id=2)
    rows = {r.item.pk: r for r in register_rows()}
    assert rows[due.pk].overdue is True
    assert rows[fine.pk].overdue is False


def test_stable_scoring_rules_are_reviewed_every_six_months():
    item = make_item(T.SCORING, days_ago=10, stable=True)
    item.last_reviewed_at = timezone.now()
    assert item.next_due() == item.last_reviewed_at + timedelta(days=182)


def test_acceptance_rate_counts_decisions_in_the_period_and_is_none_without_any():
    now = timezone.now()
    assert mql_acceptance_rate(start=now - timedelta(days=90), end=now) is None
    decide(1, 3)
    assert mql_acceptance_rate(start=now - timedelta(days=90), end=now) == 0.25


def test_the_scoring_item_turns_overdue_at_once_when_acceptance_falls_below_half():
    item = make_item(T.SCORING, days_ago=10)
    decide(2, 2)  # exactly 50%: no alert
    assert {r.item.pk: r for r in register_rows()}[item.pk].overdue is False
    decide(0, 1)  # 2 of 5 accepted = 40%
    row = {r.item.pk: r for r in register_rows()}[item.pk]
    assert row.overdue is True
    assert "40%" in row.alert


def test_a_review_snapshots_the_period_since_the_last_one_and_reschedules():
    asset = ContentAsset.objects.create(
        title="Pricing video",
        type="video",
        url="https://x.example/pricing",
        created_at=timezone.now() - timedelta(days=120),
    )
    item = make_item(T.CONTENT, object_id=asset.pk, content_type="video", days_ago=120)
    c = contact_create(email="v@example.com", created_at=timezone.now() - timedelta(days=3))
    ingest.activities_record(
        items=[
            {
                "contact": c.pk,
                "kind": "page_visit",
                "url": "https://x.example/pricing?utm=1",
                "occurred_at": (timezone.now() - timedelta(days=2)).isoformat(),
            },
            {
                "contact": c.pk,
                "kind": "page_visit",
                "url": "https://x.example/pricing",
                "occurred_at": (timezone.now() - timedelta(days=1)).isoformat(),
            },
            {
                "contact": c.pk,
                "kind": "content_download",
                "url": "https://x.example/other",
                "occurred_at": (timezone.now() - timedelta(days=1)).isoformat(),
            },
        ]
    )
    review = services.review_record(item=item, reviewer=None, decision="keep", notes="ok")
    assert review.metrics == {"views": 1, "downloads": 0, "leads": 1, "mqls_influenced": 0}
    assert review.period_start == item.started_at
    item.refresh_from_db()
    assert item.last_reviewed_at == review.reviewed_at
    assert item.next_due() == review.reviewed_at + timedelta(days=90)


def test_reviews_are_never_edited_after_the_fact():
    item = make_item()
    review = services.review_record(item=item, reviewer=None, decision="keep")
    review.notes = "rewritten"
    with pytest.raises(ValidationError):
        review.save()
    with pytest.raises(ValidationError):
        review.delete()


def test_retiring_an_item_takes_it_off_the_register():
    item = make_item()
    services.review_record(item=item, reviewer=None, decision="retire")
    assert item.pk not in {r.item.pk for r in register_rows()}


def test_a_manual_baseline_refuses_metrics_the_item_does_not_have():
    item = make_item(T.CONTENT)
    services.baseline_set_manual(
        item=item, figures={"views": 120, "downloads": 30}, note="2025 sheet"
    )
    item.refresh_from_db()
    assert (item.baseline, item.baseline_source) == ({"views": 120.0, "downloads": 30.0}, "manual")
    with pytest.raises(ValueError, match="open_rate"):
        services.baseline_set_manual(item=item, figures={"open_rate": 0.2})


def test_content_is_reviewed_grouped_by_type():
    a = make_item(T.CONTENT, object_id=101, content_type="webinar", name="W1")
    b = make_item(T.CONTENT, object_id=102, content_type="webinar", name="W2")
    other = make_item(T.CONTENT, object_id=103, content_type="video", name="V1")
    reviews = services.review_record_group(content_type="webinar", reviewer=None, decision="keep")
    assert {r.item_id for r in reviews} == {a.pk, b.pk}
    assert not Review.objects.filter(item=other).exists()


def test_the_spreadsheet_has_one_sheet_per_type_with_reviews_newest_last(marketing_client):
    w1 = make_item(T.CONTENT, object_id=1, content_type="webinar", name="=cmd|' /C calc'!A0")
    make_item(T.CONTENT, object_id=2, content_type="video", name="Video A")
    services.baseline_set_manual(item=w1, figures={"views": 10})
    first = timezone.now() - timedelta(days=40)
    services.review_record(item=w1, reviewer=None, decision="keep", at=first)
    services.review_record(item=w1, reviewer=None, decision="change", at=timezone.now())
    response = marketing_client.get(reverse("review-export", args=["xlsx"]))
    assert response.status_code == 200
    wb = load_workbook(io.BytesIO(response.content))
    assert wb.sheetnames == [label[:31] for _, label in T.choices]
    ws = wb["Content"]
    rows = [[c.value for c in r] for r in ws.iter_rows()]
    assert rows[0][:2] == ["Name", "Baseline"]
    assert rows[0][2:] == [first.date().isoformat(), timezone.now().date().isoformat()]
    # Grouped by content type: a heading row, then its items.
    assert rows[1][0] == "Video"
    assert rows[2][0] == "Video A"
    assert rows[3][0] == "Webinar"
    assert rows[4][0].startswith("'=")  # formula neutralised
    assert rows[4][1].startswith("views 10")
    assert rows[4][2].startswith("Keep")
    assert rows[4][3].startswith("Change")


def test_the_weekly_digest_mails_owners_their_overdue_items(marketing_user):
    make_item(T.PROGRAM, days_ago=200, object_id=7, owner=marketing_user, name="Onboarding drip")
    assert review_digest_send().sent == 1
    (message,) = mail.outbox
    assert message.to == [marketing_user.email]
    assert "Onboarding drip" in message.body


@pytest.mark.parametrize("departure", ["deactivated", "moved to sales"])
def test_a_departed_owners_overdue_items_go_to_the_active_marketing_users(
    marketing_user, departure
):
    gone = UserFactory(username="gone", role="marketing" if departure == "deactivated" else "sales")
    if departure == "deactivated":
        gone.is_active = False
        gone.save()
    ProgramFactory(pk=7, name="Onboarding drip")
    make_item(T.PROGRAM, days_ago=200, object_id=7, owner=gone, name="Onboarding drip")
    review_digest()  # the weekly beat task: the register's sync, then the digest
    assert [m.to for m in mail.outbox] == [[marketing_user.email]]  # as if it were unowned
    assert "Onboarding drip" in mail.outbox[0].body


def test_an_admin_owner_keeps_their_overdue_items(marketing_user, admin_user):
    make_item(T.SCORING, days_ago=200, object_id=1, owner=admin_user, name="Scoring rules")
    assert review_digest_send().sent == 1
    assert mail.outbox[0].to == [admin_user.email]


@pytest.fixture
def smtp(settings):
    """Django's real SMTP backend, pointed by the test at a loopback port."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    return settings


def test_the_weekly_digest_is_retried_while_the_mail_server_drops_the_connection(
    smtp, marketing_user, caplog
):
    ProgramFactory(pk=7)  # the task syncs the register first: the item's object must exist
    make_item(T.PROGRAM, days_ago=200, object_id=7, owner=marketing_user)
    with RefusingSMTPServer(mode="disconnect") as server:
        smtp.EMAIL_PORT = server.port
        # Eager, Celery runs the retries at once (a worker waits 1, 2, 4 … minutes).
        result = review_digest.apply()
    assert result.state == "FAILURE"  # not lost for the week after one try
    assert server.attempts == 1 + review_digest.max_retries
    assert "gave up after 6 retries" in caplog.text


def test_the_digest_retries_mail_only_the_recipients_that_failed(smtp, marketing_user):
    other = UserFactory(username="mo", role="marketing")
    make_item(T.PROGRAM, days_ago=200, object_id=7, owner=marketing_user, name="Drip")
    make_item(T.CONTENT, days_ago=200, object_id=8, owner=other, name="Webinar")
    with RefusingSMTPServer(refused={other.email}) as server:
        smtp.EMAIL_PORT = server.port
        assert review_digest_send().failed == [other.pk]
        assert review_digest.apply(kwargs={"user_ids": [other.pk]}).state == "FAILURE"
        assert server.delivered == [[marketing_user.email]]  # once, whatever the retries
        server.refused = set()  # the mailbox is back
        assert review_digest.apply(kwargs={"user_ids": [other.pk]}).result == 1
    assert server.delivered == [[marketing_user.email], [other.email]]


def test_the_register_page_lists_items_and_records_a_review(marketing_client):
    item = make_item(
        T.CONTENT, object_id=5, content_type="webinar", name="<script>alert(1)</script>"
    )
    page = marketing_client.get(reverse("review"))
    assert page.status_code == 200
    assert b"&lt;script&gt;alert(1)&lt;/script&gt;" in page.content
    detail = marketing_client.get(reverse("review-item", args=[item.pk]))
    assert detail.status_code == 200
    response = marketing_client.post(
        reverse("review-now", args=[item.pk]), {"decision": "change", "notes": "tighten"}
    )
    assert response.status_code == 302
    assert Review.objects.get(item=item).decision == "change"


def test_sales_reads_the_register_but_cannot_record_reviews(sales_client):
    item = make_item()
    assert sales_client.get(reverse("review")).status_code == 200
    response = sales_client.post(reverse("review-now", args=[item.pk]), {"decision": "keep"})
    assert response.status_code == 403
    assert not Review.objects.exists()


def test_the_api_lists_rows_and_records_a_review(marketing_api, sales_api):
    item = make_item(T.PROGRAM, days_ago=100, object_id=3, name="Drip")
    body = marketing_api.get("/api/v1/reports/review/").json()
    (row,) = body["rows"]
    assert (row["name"], row["overdue"], row["last_review"]) == ("Drip", True, None)
    assert (
        sales_api.post("/api/v1/reports/review/", {"item": item.pk, "decision": "keep"}).status_code
        == 403
    )
    bad = marketing_api.post("/api/v1/reports/review/", {"item": item.pk, "decision": "maybe"})
    assert bad.status_code == 400
    ok = marketing_api.post(
        "/api/v1/reports/review/", {"item": item.pk, "decision": "keep", "notes": "fine"}
    )
    assert ok.status_code == 201
    assert marketing_api.get("/api/v1/reports/review/").json()["rows"][0]["overdue"] is False


def test_a_program_review_uses_the_report_definitions():
    """Two entrants, two delivered, one clicker, one MQL credited, 300 of cost in the period."""
    from crm.models import CampaignCost
    from nurture.models import Enrollment
    from tests.nurture.factories import ProgramFactory

    program = ProgramFactory()
    started = timezone.now() - timedelta(days=10)
    item = make_item(T.PROGRAM, object_id=program.pk, started_at=started, name=program.name)
    today = timezone.localdate()
    CampaignCost.objects.create(
        campaign=program.campaign,
        period_start=today - timedelta(days=4),
        period_end=today - timedelta(days=2),
        amount=300,
        category="media",
    )
    a = contact_create(email="a@example.com", created_at=started)
    b = contact_create(email="b@example.com", created_at=started)
    for c in (a, b):
        Enrollment.objects.create(
            contact=c, program=program, entered_at=started + timedelta(days=1)
        )
    t = lambda d: (timezone.now() - timedelta(days=d)).isoformat()  # noqa: E731
    cid = program.campaign_id
    ingest.activities_record(
        items=[
            {
                "contact": a.pk,
                "kind": "email_sent",
                "occurred_at": t(5),
                "campaign": cid,
                "message_id": "m1",
            },
            {
                "contact": b.pk,
                "kind": "email_sent",
                "occurred_at": t(5),
                "campaign": cid,
                "message_id": "m2",
            },
            {
                "contact": a.pk,
                "kind": "email_clicked",
                "occurred_at": t(4),
                "campaign": cid,
                "message_id": "m1",
                "url": "https://example.com/x",
            },
        ]
    )
    lifecycle.stage_change(contact=a, to_stage=Stage.MQL, at=timezone.now() - timedelta(days=3))
    review = services.review_record(item=item, reviewer=None, decision="keep")
    m = review.metrics
    assert (m["entrants"], m["delivered"], m["unique_clicks"]) == (2, 2, 1)
    assert m["click_through_rate"] == 0.5
    assert (m["unsubscribed"], m["unsubscribe_rate"]) == (0, 0.0)
    assert m["mqls"] == 1
    assert (m["program_cost"], m["cost_per_mql"]) == (300.0, 300.0)


def test_the_register_follows_what_exists():
    from tests.nurture.factories import ProgramFactory, TriggerFactory

    trigger = TriggerFactory(program=ProgramFactory(name="Webinar follow-up"))
    asset = ContentAsset.objects.create(title="Fintech report", type="white_paper")
    assert services.register_sync() == 5  # program, trigger, asset, scoring, assignment
    assert services.register_sync() == 0
    types = dict(ReviewItem.objects.values_list("type", "name").order_by("type"))
    assert types[T.AUTOMATION].startswith("Webinar follow-up")
    automation = ReviewItem.objects.get(type=T.AUTOMATION)
    assert automation.object_id == trigger.pk
    assert automation.first_review_days == 30
    assert ReviewItem.objects.get(type=T.CONTENT).object_id == asset.pk
    asset.delete()
    services.register_sync()
    assert not ReviewItem.objects.get(type=T.CONTENT).active


def test_the_dashboard_metrics_trend_per_quarter_over_eight_quarters(sales_client):
    from reports.review.trends import dashboard_long_term, quarter_start

    created = quarter_start(timezone.now()) + timedelta(hours=1)
    if created > timezone.now():  # the first hour of a quarter: use the previous one
        created = quarter_start(created - timedelta(days=1)) + timedelta(hours=1)
    contact_create(email="q@example.com", created_at=created)
    trend = dashboard_long_term()
    assert len(trend["labels"]) == 8
    new_leads = next(r for r in trend["rows"] if r["key"] == "new_leads")["values"]
    assert new_leads[:-2] == [0.0] * 6
    assert sum(new_leads) == 1.0
    acceptance = next(r for r in trend["rows"] if r["key"] == "mql_acceptance_rate")["values"]
    assert acceptance == [None] * 8  # nothing decided: no rate, not 0
    page = sales_client.get(reverse("long-term-trend"))
    assert page.status_code == 200
    assert b"Long-term trend" in page.content


def test_the_short_term_trend_lists_the_programs_edits_with_who_made_them(marketing_user):
    """Every builder write is in the program's history (nurture.ProgramChange): a step
    added, edited, moved and deleted, an entry rule added and removed, a pause and a
    resume — each with who did it."""
    from nurture.models import Step, Trigger
    from nurture.services import programs as ps
    from tests.nurture.factories import ProgramFactory

    program = ProgramFactory(status="active")
    item = make_item(T.PROGRAM, object_id=program.pk, days_ago=40, name=program.name)
    by = marketing_user
    ps.step_create(step=Step(program=program, kind="wait", config={"hours": 2}), by=by)
    end = ps.step_create(step=Step(program=program, kind="end"), by=by)
    ps.step_move(step=end, up=True, by=by)
    wait = program.steps.get(kind="wait")
    ps.step_edited(step=wait, fields=["config"], by=by)
    ps.step_delete(step=wait, by=by)
    trigger = ps.trigger_create(trigger=Trigger(program=program, kind="manual"), by=by)
    ps.trigger_delete(trigger=trigger, by=by)
    ps.program_set_status(program=program, status="paused", by=by)
    ps.program_set_status(program=program, status="active", by=by)
    edits = [e.text for e in trends_short(item)["edits"]]
    who = f" by {by}"
    for text in [
        "Step 1 (wait) added",
        "Step 2 (end) added",
        "Step 2 (end) moved up",
        "Step 2 (wait) edited: config",
        "Step 2 (wait) deleted",
        "Entry rule added: added by hand or api",
        "Entry rule removed: added by hand or api",
        "Status active → paused",
        "Status paused → active",
    ]:
        assert text + who in edits, (text, edits)


def test_the_builder_pages_and_the_api_write_the_programs_history(
    marketing_client, marketing_api, marketing_user
):
    from nurture.models import ProgramChange
    from tests.nurture.factories import ProgramFactory

    program = ProgramFactory(status="active")
    marketing_client.post(
        reverse("nurture:program-status", args=[program.pk]), {"status": "paused"}
    )
    response = marketing_api.patch(
        f"/api/v1/programs/{program.pk}/", {"name": "Renamed", "status": "active"}, format="json"
    )
    assert response.status_code == 200
    summaries = list(
        ProgramChange.objects.filter(program=program)
        .order_by("id")
        .values_list("summary", "by__username")
    )
    me = marketing_user.username
    assert summaries == [
        ("Status active → paused", me),
        ("Settings changed: name", me),
        ("Status paused → active", me),
    ]


def trends_short(item):
    from reports.review.trends import short_term

    return short_term(item)


# --- Review findings ----------------------------------------------------------------------


def test_a_retired_program_stays_retired_after_the_weekly_refresh():
    program = ProgramFactory(name="Old drip")
    services.register_sync()
    item = ReviewItem.objects.get(type=T.PROGRAM, object_id=program.pk)
    services.review_record(item=item, reviewer=None, decision="retire")
    assert item.pk not in {r.item.pk for r in register_rows()}
    services.register_sync()  # "Refresh register" / reports.tasks.review_digest every Monday
    assert item.pk not in {r.item.pk for r in register_rows()}


def test_an_archived_program_is_not_due_for_review():
    from nurture.models import Program

    program = ProgramFactory(name="Archived drip", status=Program.Status.ARCHIVED)
    TriggerFactory(program=program)
    program.campaign.start_date = (timezone.now() - timedelta(days=400)).date()
    program.campaign.save()
    services.register_sync()
    assert not [r for r in register_rows() if r.item.type in (T.PROGRAM, T.AUTOMATION)]
    # archiving a registered program takes it (and its rules) off the register
    live = ProgramFactory(name="Live drip")
    services.register_sync()
    assert ReviewItem.objects.filter(object_id=live.pk, type=T.PROGRAM, active=True).exists()
    live.status = Program.Status.ARCHIVED
    live.save()
    services.register_sync()
    assert not ReviewItem.objects.filter(object_id=live.pk, type=T.PROGRAM, active=True).exists()


def test_a_trigger_added_today_is_first_due_30_days_from_now():
    program = ProgramFactory(name="Year-old program")
    program.campaign.start_date = (timezone.now() - timedelta(days=365)).date()
    program.campaign.save()
    services.register_sync()
    TriggerFactory(program=program)  # a new automation rule starts today
    services.register_sync()
    row = next(r for r in register_rows() if r.item.type == T.AUTOMATION)
    assert row.overdue is False, row.next_due
    assert row.next_due >= timezone.now() + timedelta(days=29)


def test_two_reviews_on_one_day_both_reach_the_export():
    item = ReviewItem.objects.create(
        type=T.PROGRAM,
        object_id=99,
        name="P",
        started_at=timezone.now() - timedelta(days=100),
        first_review_days=90,
        cadence_days=90,
    )
    at = timezone.now()
    services.review_record(item=item, reviewer=None, decision="keep", at=at - timedelta(hours=1))
    services.review_record(item=item, reviewer=None, decision="change", at=at)
    assert Review.objects.filter(item=item).count() == 2
    header, rows = _sheet_rows(T.PROGRAM)
    assert len(header) == 3  # one day
    assert rows[0][2].startswith("Keep: ")
    assert " / Change: " in rows[0][2]


def test_export_dates_reviews_in_the_site_time_zone(settings):
    settings.TIME_ZONE = "America/Los_Angeles"
    from datetime import datetime
    from zoneinfo import ZoneInfo

    item = ReviewItem.objects.create(
        type=T.PROGRAM,
        object_id=98,
        name="P",
        started_at=timezone.now() - timedelta(days=100),
        first_review_days=90,
        cadence_days=90,
    )
    at = datetime(2025, 3, 3, 20, 0, tzinfo=ZoneInfo("America/Los_Angeles"))  # 04:00 UTC on the 4th
    services.review_record(item=item, reviewer=None, decision="keep", at=at)
    header, rows = _sheet_rows(T.PROGRAM)
    assert header[2] == "2025-03-03", header  # the day in Los Angeles, not UTC's 4 March


def test_two_concurrent_first_syncs_cannot_make_two_scoring_items(monkeypatch):
    """Simulates two workers (page GET on an empty register + the Monday task) that both
    read ``existing`` before either inserted: the unique constraint should stop the second."""
    real = ReviewItem.objects.all
    snapshot = list(real())  # empty: what both workers saw
    services.register_sync()
    monkeypatch.setattr(ReviewItem.objects, "all", lambda: snapshot)
    services.register_sync()  # the second worker, with its stale read
    monkeypatch.undo()
    assert ReviewItem.objects.filter(type=T.SCORING).count() == 1
