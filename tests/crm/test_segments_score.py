"""Segments on the score follow the score (review finding): an activity batch's scoring runs
before the segments handler, and a rescore refreshes the segments that read the score."""

import pytest
from django.utils import timezone

from crm import services
from crm.ingest import activities_record
from crm.models import SegmentMembership
from crm.segments import segment_queryset, segment_save
from tests.scoring.factories import EngagementRuleFactory

pytestmark = pytest.mark.django_db


def stored(segment):
    return set(
        SegmentMembership.objects.filter(segment=segment).values_list("contact_id", flat=True)
    )


def fresh(segment):
    return set(segment_queryset(segment).values_list("pk", flat=True))


@pytest.fixture
def warm():
    return segment_save(
        segment=None,
        name="Warm",
        kind="dynamic",
        definition={"field": "score", "op": "gte", "value": 10},
    )


def test_a_score_segment_follows_a_score_change_from_an_activity_batch(warm):
    EngagementRuleFactory(points=10)
    ada = services.contact_create(email="ada@example.com")
    assert stored(warm) == set()
    activities_record(
        items=[{"contact": ada.pk, "kind": "page_visit", "occurred_at": timezone.now()}]
    )
    assert stored(warm) == fresh(warm) == {ada.pk}


def test_a_rescore_refreshes_the_segments_on_the_score(warm):
    from scoring.models import RescoreRun
    from scoring.services import rescore_execute

    rule = EngagementRuleFactory(points=5)
    ada = services.contact_create(email="ada@example.com")
    activities_record(
        items=[{"contact": ada.pk, "kind": "page_visit", "occurred_at": timezone.now()}]
    )
    assert stored(warm) == set()
    rule.points = 20
    rule.save()
    run = rescore_execute(run_id=RescoreRun.objects.create(total=0).pk)
    assert run.status == RescoreRun.Status.DONE
    assert stored(warm) == fresh(warm) == {ada.pk}
