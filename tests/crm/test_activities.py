"""The shared definitions of crm.models.activities: each database condition selects the
activities its Python predicate accepts, on SQLite and PostgreSQL alike."""

import pytest

from crm.models import Activity
from crm.models.activities import (
    click_q,
    engagement_q,
    global_unsubscribe_q,
    is_click,
    is_engagement,
    is_program_unsubscribe,
    open_q,
    program_unsubscribe_q,
    unsubscribe_link_prefix,
)
from crm.models.choices import ActivityKind as K
from tests.factories import ActivityFactory

pytestmark = pytest.mark.django_db


def _selected(q) -> set[int]:
    return set(Activity.objects.filter(q).values_list("pk", flat=True))


def test_clicks_opens_and_engagements_agree_in_sql_and_python(settings):
    settings.SITE_URL = "https://crm.example.com"
    prefix = unsubscribe_link_prefix()
    rows = [
        (kind, machine, url)
        for kind in (K.EMAIL_CLICKED, K.EMAIL_OPENED, K.PAGE_VISIT, K.EMAIL_SENT)
        for machine in (False, True)
        for url in (
            "",
            "https://x.example/offer",
            "https://crm.example.com/u/token",
            "https://CRM.EXAMPLE.COM/U/token",  # the unsubscribe link, case aside
            "https://crm.example.com/pricing",  # the site, not its unsubscribe link
            "https://x.example/?next=https://crm.example.com/u/t",
        )
    ]
    made = {
        ActivityFactory(kind=kind, is_machine=machine, url=url).pk: (kind, machine, url)
        for kind, machine, url in rows
    }
    clicks = {pk for pk, r in made.items() if is_click(*r, prefix)}
    assert _selected(click_q()) == clicks
    assert len(clicks) == 4  # a person's, with no URL or one that is not the unsubscribe link
    human_opens = {pk for pk, (k, m, _) in made.items() if k == K.EMAIL_OPENED and not m}
    assert _selected(open_q()) == clicks | human_opens
    assert _selected(engagement_q()) == {pk for pk, r in made.items() if is_engagement(*r, prefix)}
    assert len(_selected(engagement_q())) == 4 + 6 + 6  # clicks, human opens, human visits


def test_an_unsubscribe_is_from_one_program_only_when_its_scope_says_so():
    details = [{}, {"via": "link"}, {"scope": "program"}, {"scope": "Program"}, {"scope": None}]
    made = {ActivityFactory(kind=K.EMAIL_UNSUBSCRIBED, details=d).pk: d for d in details} | {
        ActivityFactory(kind=K.EMAIL_COMPLAINED, details={"scope": "program"}).pk: None
    }
    program = {
        pk
        for pk, d in made.items()
        if d is not None and is_program_unsubscribe(K.EMAIL_UNSUBSCRIBED, d)
    }
    assert len(program) == 1
    assert _selected(program_unsubscribe_q()) == program
    unsubscribes = {pk for pk, d in made.items() if d is not None}
    assert _selected(global_unsubscribe_q()) == unsubscribes - program
