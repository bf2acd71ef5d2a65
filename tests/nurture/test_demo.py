"""The nurture demo seeder writes history: nothing it makes starts after "now"."""

from datetime import UTC, datetime

import pytest

from crm import demo as crm_demo
from nurture import demo
from nurture.models import EmailSend, Enrollment

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


def test_no_enrollment_or_send_is_dated_after_now():
    ctx = crm_demo.SeedContext(seed=42, contacts=400, users=crm_demo.ensure_demo_users(), now=NOW)
    crm_demo.seed(ctx)
    demo.seed(ctx)
    assert Enrollment.objects.exists()
    assert not Enrollment.objects.filter(entered_at__gt=NOW).exists()
    assert not EmailSend.objects.filter(sent_at__gt=NOW).exists()
