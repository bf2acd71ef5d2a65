from datetime import timedelta

import pytest
from django.utils import timezone

from crm import services
from crm.models import Activity, Contact, Deal, LifecycleTransition, Segment, SegmentMembership
from tests.factories import ActivityFactory, DealFactory

pytestmark = pytest.mark.django_db


def test_merging_keeps_the_older_contact_and_moves_everything():
    now = timezone.now()
    old = services.contact_create(email="old@example.com", created_at=now - timedelta(days=9))
    new = services.contact_create(
        email="new@example.com", job_title="CTO", phone="123", attributes={"plan": "pro"}
    )
    ActivityFactory(contact=new)
    ActivityFactory(contact=old)
    DealFactory(contact=new)
    both = Segment.objects.create(name="Both", kind="static")
    only_new = Segment.objects.create(name="New only", kind="static")
    SegmentMembership.objects.create(segment=both, contact=old, joined_at=now)
    SegmentMembership.objects.create(segment=both, contact=new, joined_at=now)
    SegmentMembership.objects.create(segment=only_new, contact=new, joined_at=now)

    # Passing them the "wrong" way round still keeps the older one.
    kept = services.contact_merge(keep=new, duplicate=old)

    assert kept.pk == old.pk
    assert list(Contact.objects.values_list("email", flat=True)) == ["old@example.com"]
    assert Activity.objects.filter(contact=old).count() == 2
    assert LifecycleTransition.objects.filter(contact=old).count() == 2
    assert Deal.objects.get().contact_id == old.pk
    assert SegmentMembership.objects.filter(contact=old).count() == 2
    kept.refresh_from_db()
    assert (kept.job_title, kept.phone, kept.attributes) == ("CTO", "123", {"plan": "pro"})


def test_merging_a_contact_with_itself_is_refused():
    contact = services.contact_create(email="a@example.com")
    with pytest.raises(Exception, match="itself"):
        services.contact_merge(keep=contact, duplicate=contact)
