"""nurture 0009: Amazon SES activities named by their recipient's address are renamed with
the address's keyed digest — the name a retry of the same event gets now."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from nurture.mail import recipient_digest

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = [("nurture", "0008_send_to_digest")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def test_ses_event_ids_lose_the_address():
    apps = _migrate(BEFORE)
    contact = apps.get_model("crm", "Contact").objects.create(
        email="zq@privacy-probe.example", created_at=timezone.now(), updated_at=timezone.now()
    )
    activity = apps.get_model("crm", "Activity")
    named = {
        "amazon_ses:0100-abc:ZQ@privacy-probe.example": None,
        "postmark:5f2c@example": None,  # another provider's id with an "@": left alone
        "amazon_ses:0100-def": None,  # no recipient part
    }
    for external_id in named:
        named[external_id] = activity.objects.create(
            contact=contact, kind="email_delivered", occurred_at=timezone.now(),
            external_id=external_id,
        ).pk  # fmt: skip
    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    renamed = dict(activity.objects.values_list("pk", "external_id"))
    assert renamed[named["amazon_ses:0100-abc:ZQ@privacy-probe.example"]] == (
        f"amazon_ses:0100-abc:{recipient_digest('zq@privacy-probe.example')}"
    )
    assert renamed[named["postmark:5f2c@example"]] == "postmark:5f2c@example"
    assert renamed[named["amazon_ses:0100-def"]] == "amazon_ses:0100-def"
