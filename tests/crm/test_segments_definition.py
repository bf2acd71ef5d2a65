"""The segment definition language: every condition type and operator, and bad input."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Exists, OuterRef, Q
from django.test import override_settings
from django.utils import timezone

from crm.models import Activity, ActivityKind, Company, Contact, SegmentMembership
from crm.segments import MAX_CONDITIONS, DefinitionError, compile_definition, validate_definition
from tests.crm.segments_factories import SegmentFactory, matching
from tests.factories import ActivityFactory, CampaignFactory, CompanyFactory, ContactFactory

pytestmark = pytest.mark.django_db
NOW = timezone.now()


def cond(field, op, value=None):
    c = {"field": field, "op": op}
    if value is not None:
        c["value"] = value
    return c


@pytest.fixture
def people():
    soft = CompanyFactory(industry="Software", size_band=Company.SizeBand.MEDIUM, country="DE")
    bank = CompanyFactory(industry="Fintech", size_band=Company.SizeBand.LARGE, country="GB")
    return {
        "ada": ContactFactory(
            email="ada@soft.example",
            job_title="Director of Engineering",
            company=soft,
            score=80,
            stage="mql",
            country="DE",
            attributes={"plan": "pro", "seats": 25},
            timezone="Europe/Berlin",
            consent_source="Webinar form",
            consent_given_at=NOW - timedelta(days=5),
            created_at=NOW - timedelta(days=10),
        ),
        "bob": ContactFactory(
            email="bob@bank.example",
            job_title="Analyst",
            company=bank,
            score=20,
            country="GB",
            phone="",
            attributes={"plan": "free", "seats": 2},
            timezone="Europe/London",
            consent_source="Trade show",
            consent_given_at=NOW - timedelta(days=90),
            created_at=NOW - timedelta(days=100),
        ),
        "cy": ContactFactory(
            email="cy@none.example",
            job_title="",
            company=None,
            score=50,
            source="event",
            email_status="unsubscribed",
            created_at=NOW - timedelta(days=400),
        ),
    }


def ids(people, *names):
    return {people[n].pk for n in names}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (cond("job_title", "contains", "director"), {"ada"}),
        (cond("job_title", "starts_with", "ana"), {"bob"}),
        (cond("job_title", "equals", "analyst"), {"bob"}),
        (cond("job_title", "not_equals", "analyst"), {"ada", "cy"}),
        (cond("job_title", "is_empty"), {"cy"}),
        (cond("job_title", "is_not_empty"), {"ada", "bob"}),
        (cond("country", "in", ["DE", "GB"]), {"ada", "bob"}),
        (cond("country", "not_in", ["DE"]), {"bob", "cy"}),
        (cond("email", "contains", "@bank."), {"bob"}),
        (cond("stage", "equals", "mql"), {"ada"}),
        (cond("stage", "not_equals", "mql"), {"bob", "cy"}),
        (cond("source", "in", ["event", "api"]), {"cy"}),
        (cond("email_status", "equals", "unsubscribed"), {"cy"}),
        (cond("consent_basis", "equals", "consent"), {"ada", "bob", "cy"}),
        (cond("score", "gt", 50), {"ada"}),
        (cond("score", "gte", 50), {"ada", "cy"}),
        (cond("score", "lt", 50), {"bob"}),
        (cond("score", "lte", 50), {"bob", "cy"}),
        (cond("score", "between", [20, 50]), {"bob", "cy"}),
        (cond("score", "equals", 80), {"ada"}),
        (cond("score", "not_equals", 80), {"bob", "cy"}),
        (cond("score", "in", [20, 80]), {"ada", "bob"}),
        (cond("created_at", "within_last_days", 30), {"ada"}),
        (cond("timezone", "starts_with", "europe/"), {"ada", "bob"}),
        (cond("timezone", "equals", "Europe/London"), {"bob"}),
        (cond("timezone", "is_empty"), {"cy"}),
        (cond("consent_source", "contains", "webinar"), {"ada"}),
        (cond("consent_source", "not_in", ["Trade show"]), {"ada", "cy"}),
        (cond("consent_given_at", "within_last_days", 30), {"ada"}),
        (cond("consent_given_at", "is_empty"), {"cy"}),
        (cond("updated_at", "within_last_days", 1), {"ada", "bob", "cy"}),
        (cond("updated_at", "before", "2000-01-01"), set()),
        (cond("owner", "is_empty"), {"ada", "bob", "cy"}),
        (cond("company.industry", "equals", "software"), {"ada"}),
        (cond("company.industry", "not_equals", "Software"), {"bob", "cy"}),
        (cond("company.size_band", "in", ["201-1000", "1000+"]), {"bob"}),
        (cond("company.country", "equals", "GB"), {"bob"}),
        (cond("company.name", "is_empty"), {"cy"}),
        (cond("attributes.plan", "equals", "pro"), {"ada"}),
        (cond("attributes.plan", "in", ["pro", "free"]), {"ada", "bob"}),
        (cond("attributes.plan", "is_empty"), {"cy"}),
        (cond("attributes.plan", "is_not_empty"), {"ada", "bob"}),
        (cond("attributes.plan", "contains", "RE"), {"bob"}),
        (cond("attributes.seats", "gt", 10), {"ada"}),
        (cond("attributes.seats", "lte", 2), {"bob"}),
    ],
)
def test_it_evaluates_each_profile_operator(people, condition, expected):
    assert matching(condition) == ids(people, *expected)


def test_it_compares_created_dates_by_whole_days_in_the_site_zone(people):
    day = timezone.localtime(people["bob"].created_at).date()
    iso = day.isoformat()
    assert people["bob"].pk in matching(cond("created_at", "between", [iso, iso]))
    assert people["bob"].pk not in matching(cond("created_at", "before", iso))
    assert people["bob"].pk not in matching(cond("created_at", "after", iso))
    assert matching(cond("created_at", "before", iso)) == ids(people, "cy")
    assert matching(cond("created_at", "after", iso)) == ids(people, "ada")


def test_it_matches_owner_and_acquiring_campaign_by_id(people):
    user = get_user_model().objects.create(username="owner1")
    campaign = CampaignFactory()
    Contact.objects.filter(pk=people["ada"].pk).update(owner=user, acquired_by=campaign)
    assert matching(cond("owner", "equals", user.pk)) == ids(people, "ada")
    assert matching(cond("owner", "not_equals", user.pk)) == ids(people, "bob", "cy")
    assert matching(cond("acquired_by", "in", [campaign.pk])) == ids(people, "ada")
    assert matching(cond("acquired_by", "is_not_empty")) == ids(people, "ada")


def test_it_combines_all_any_and_not_groups(people):
    definition = {
        "any": [
            {"all": [cond("score", "gt", 10), cond("country", "equals", "GB")]},
            {"not": {"any": [cond("country", "equals", "GB"), cond("country", "equals", "DE")]}},
        ]
    }
    assert matching(definition) == ids(people, "bob", "cy")
    assert matching({"all": []}) == ids(people, "ada", "bob", "cy")
    assert matching({"any": []}) == set()


def _act(contact, kind, days_ago, **kw):
    return ActivityFactory(
        contact=contact, kind=kind, occurred_at=NOW - timedelta(days=days_ago), **kw
    )


def test_it_evaluates_behaviour_with_time_windows_campaigns_and_urls(people):
    ada, bob, cy = people["ada"], people["bob"], people["cy"]
    webinar = CampaignFactory()
    _act(ada, ActivityKind.WEBINAR_ATTENDED, 5, campaign=webinar)
    _act(bob, ActivityKind.WEBINAR_ATTENDED, 120)
    _act(ada, ActivityKind.PAGE_VISIT, 1, url="https://x.example/pricing?a=1")
    _act(bob, ActivityKind.PAGE_VISIT, 1, url="https://x.example/blog")
    _act(cy, ActivityKind.FORM_SUBMITTED, 3, details={"form": "demo", "content_type": "ebook"})
    w = "webinar_attended"
    assert matching({"did": w}) == ids(people, "ada", "bob")
    assert matching({"did": w, "within_last_days": 90}) == ids(people, "ada")
    assert matching({"did": w, "campaign": webinar.pk}) == ids(people, "ada")
    assert matching({"did_not": w, "within_last_days": 90}) == ids(people, "bob", "cy")
    assert matching({"did": "page_visit", "url_contains": "/pricing"}) == ids(people, "ada")
    assert matching({"did": "form_submitted", "form": "demo"}) == ids(people, "cy")
    assert matching({"did": "form_submitted", "content_type": "ebook"}) == ids(people, "cy")
    assert matching({"did": "form_submitted", "form": "other"}) == set()
    old = timezone.localtime(NOW - timedelta(days=120)).date().isoformat()
    assert matching({"did": w, "between": [old, old]}) == ids(people, "bob")


def test_it_counts_activities_for_min_and_max_thresholds(people):
    ada, bob = people["ada"], people["bob"]
    for _ in range(3):
        _act(ada, ActivityKind.PAGE_VISIT, 1)
    _act(bob, ActivityKind.PAGE_VISIT, 1)
    v = "page_visit"
    assert matching({"did": v, "min_count": 3}) == ids(people, "ada")
    assert matching({"did": v, "min_count": 2, "max_count": 3}) == ids(people, "ada")
    assert matching({"did": v, "max_count": 1}) == ids(people, "bob")
    assert matching({"did": v, "min_count": 0, "max_count": 1}) == ids(people, "bob", "cy")
    assert matching({"did": v, "min_count": 4}) == set()


@override_settings(SITE_URL="https://crm.example.com")
def test_machine_events_and_unsubscribe_link_clicks_are_nobodys_behaviour(people):
    """A privacy proxy's open or a link scanner's click is no "did" (crm.models.activities
    .persons_q), nor is a click on the unsubscribe link a click; opens count the recorded
    open events, so an email's click is no second open."""
    ada, bob, cy = people["ada"], people["bob"], people["cy"]
    opened, clicked = ActivityKind.EMAIL_OPENED, ActivityKind.EMAIL_CLICKED
    for _ in range(3):
        ActivityFactory(contact=bob, kind=opened, is_machine=True)  # Apple's proxy
    ActivityFactory(contact=bob, kind=clicked, is_machine=True, url="https://x.example/a")
    ActivityFactory(contact=cy, kind=clicked, url="https://CRM.example.com/u/tok")
    ActivityFactory(contact=ada, kind=opened)
    ActivityFactory(contact=ada, kind=clicked, url="https://x.example/a")
    assert matching({"did": "email_opened"}) == ids(people, "ada")
    assert matching({"did_not": "email_opened"}) == ids(people, "bob", "cy")
    assert matching({"did": "email_opened", "min_count": 2}) == set()
    assert matching({"did": "email_clicked"}) == ids(people, "ada")
    assert matching({"did": "email_clicked", "min_count": 0, "max_count": 0}) == ids(
        people, "bob", "cy"
    )


def test_it_reads_another_segments_stored_membership(people):
    other = SegmentFactory(kind="static")
    SegmentMembership.objects.create(segment=other, contact=people["bob"], joined_at=NOW)
    assert matching({"in_segment": other.pk}) == ids(people, "bob")
    assert matching({"not_in_segment": other.pk}) == ids(people, "ada", "cy")


class ProgramProvider:
    """A stand-in extension like nurture's "program" condition."""

    @staticmethod
    def validate(condition):
        spec = condition["program"]
        if not isinstance(spec, dict) or not isinstance(spec.get("id"), int):
            raise ValueError("needs an id")

    @staticmethod
    def build(condition):
        spec = condition["program"]
        q = Q(Exists(Activity.objects.filter(contact=OuterRef("pk"), campaign_id=spec["id"])))
        return q if spec.get("state", "in") == "in" else ~q


PROVIDERS = {"program": ProgramProvider}


@override_settings(SEGMENT_CONDITION_PROVIDERS=["tests.crm.test_segments_definition.PROVIDERS"])
def test_it_dispatches_unknown_condition_keys_to_registered_providers(people):
    campaign = CampaignFactory()
    _act(people["cy"], ActivityKind.PAGE_VISIT, 1, campaign=campaign)
    assert matching({"program": {"id": campaign.pk, "state": "in"}}) == ids(people, "cy")
    with pytest.raises(DefinitionError, match=r"all\[0\]\.program: needs an id"):
        validate_definition({"all": [{"program": {"id": "x"}}]})


# --- Bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        ({"all": [{"field": "salary", "op": "equals", "value": 1}]}, 'all[0].field: "salary" is'),
        (
            {"all": [{"field": "score", "op": "gt", "value": 1}, cond("score", "contains", "x")]},
            'all[1].op: "contains" is not valid for a number field',
        ),
        (cond("score", "gt", "ten"), 'value: must be a number, not "ten"'),
        (cond("score", "gt", True), "value: must be a number"),
        (cond("created_at", "before", "01/02/2026"), 'value: "01/02/2026" is not a date'),
        (cond("created_at", "before", "2026-02-30"), "is not a date in the form YYYY-MM-DD"),
        ({"did": "webinar_attended", "between": ["2026-01-01", "31.03.2026"]}, "between[1]"),
        ({"did": "teleported"}, 'did: "teleported" is not a known activity kind'),
        ({"did": "page_visit", "min_count": "3"}, "min_count: must be a whole number"),
        ({"did": "page_visit", "within_last_days": -1}, "within_last_days"),
        (cond("stage", "equals", "vip"), 'value: "vip" is not one of'),
        (cond("stage", "frobnicate", "x"), 'op: "frobnicate" is not a known operator'),
        (cond("attributes.a__b", "equals", "x"), "is not a known field"),
        (cond("attributes.n", "between", [1, "2026-01-01"]), "must be two numbers or two dates"),
        (cond("attributes.n", "between", [1, True]), "must be two numbers or two dates"),
        (cond("attributes.n", "between", ["2026-01-01"]), "must be a list of two values"),
        (cond("attributes.n", "between", ["2026-01-01", "2026-13-01"]), "value[1]: "),
        (cond("attributes.n", "before", "next week"), 'value: "next week" is not a date'),
        (cond("attributes.n", "after", 20260101), "is not a date in the form YYYY-MM-DD"),
        (cond("attributes.n", "within_last_days", "30"), "must be a whole number of days"),
        (cond("updated_at", "contains", "2026"), "is not valid for a date field"),
        ({"all": {"field": "score"}}, "all: must be a list"),
        ({"all": [], "any": []}, "exactly one key"),
        ([1, 2], "must be a group"),
        ({"mystery": 1}, '"mystery" is not a known condition'),
        ({"in_segment": "12"}, "in_segment: must be a segment id"),
        ({"in_segment": 999999}, "segment 999999 does not exist"),
    ],
)
def test_it_refuses_bad_definitions_naming_the_part(definition, message):
    with pytest.raises(DefinitionError) as err:
        validate_definition(definition)
    assert message in str(err.value)


def test_it_refuses_definitions_nested_too_deep():
    node = cond("score", "gt", 1)
    for _ in range(10):
        node = {"not": node}
    with pytest.raises(DefinitionError, match="nested deeper than 8 levels"):
        validate_definition(node)


def test_it_refuses_too_many_conditions():
    with pytest.raises(DefinitionError, match=f"at most {MAX_CONDITIONS} conditions"):
        validate_definition({"any": [cond("score", "gt", i) for i in range(MAX_CONDITIONS + 1)]})


def test_it_refuses_a_segment_that_refers_to_itself_directly_or_indirectly():
    a = SegmentFactory()
    b = SegmentFactory(definition={"all": [{"in_segment": a.pk}]})
    c = SegmentFactory(definition={"all": [{"not_in_segment": b.pk}]})
    with pytest.raises(DefinitionError, match="cannot refer to itself"):
        validate_definition({"in_segment": a.pk}, segment_id=a.pk)
    with pytest.raises(DefinitionError, match=f"{a.pk} → {c.pk} → {b.pk} → {a.pk}"):
        validate_definition({"any": [{"in_segment": c.pk}]}, segment_id=a.pk)
    validate_definition({"in_segment": c.pk}, segment_id=None)  # a new segment: no cycle


# --- Hostile input: field names are a whitelist, values are parameters -----------------------


HOSTILE_FIELDS = [
    "owner__password",
    "owner.password",
    "email; DROP TABLE crm_contact; --",
    "attributes.x') OR 1=1 --",
    "attributes.plan__contains",
    "company__owner__password",
    "__class__",
    "attributes.",
    "pk",
]


@pytest.mark.parametrize("name", HOSTILE_FIELDS)
def test_it_refuses_hostile_field_names(name):
    with pytest.raises(DefinitionError, match="is not a known field"):
        validate_definition(cond(name, "equals", "x"))


HOSTILE_VALUES = [
    "' OR '1'='1",
    'x"); DELETE FROM crm_contact; --',
    "%",
    "_",
    "\\",
    "Robert'); DROP TABLE crm_activity;--",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_it_treats_hostile_values_as_data(people, value):
    people["bob"].job_title = value
    people["bob"].save()
    assert matching(cond("job_title", "equals", value)) == ids(people, "bob")
    assert matching(cond("job_title", "contains", value)) == ids(people, "bob")
    assert matching(cond("attributes.plan", "equals", value)) == set()
    assert matching({"did": "page_visit", "url_contains": value}) == set()
    assert Contact.objects.count() == 3
    assert Activity.objects.count() == 0


def test_it_uses_the_site_time_zone_for_day_boundaries(settings, people):
    settings.TIME_ZONE = "Europe/Berlin"
    start = datetime(2026, 3, 1, 0, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 23:30 UTC, 28 Feb
    Contact.objects.filter(pk=people["ada"].pk).update(created_at=start)
    q = compile_definition(cond("created_at", "between", ["2026-03-01", "2026-03-01"]))
    assert set(Contact.objects.filter(q).values_list("pk", flat=True)) == ids(people, "ada")


# --- Custom attributes (review findings): numbers as text, missing keys, case ----------


def test_an_attribute_number_stored_as_text_compares_as_a_number():
    """A CSV import stores every custom attribute as text; the builder sends numbers."""
    big = ContactFactory(attributes={"employees": "150"})
    small = ContactFactory(attributes={"employees": "50"})
    json_number = ContactFactory(attributes={"employees": 120})
    ContactFactory(attributes={"employees": "many"})
    ContactFactory(attributes={})
    f = "attributes.employees"
    assert matching({"field": f, "op": "gt", "value": 100}) == {big.pk, json_number.pk}
    assert matching({"field": f, "op": "lte", "value": 50}) == {small.pk}
    assert matching({"field": f, "op": "equals", "value": 150}) == {big.pk}
    assert matching({"field": f, "op": "in", "value": [50, 120]}) == {small.pk, json_number.pk}


def test_negations_of_an_attribute_keep_contacts_without_the_key():
    pro = ContactFactory(attributes={"plan": "Pro"})
    free = ContactFactory(attributes={"plan": "free"})
    none = ContactFactory(attributes={})
    plan = {"field": "attributes.plan", "op": "equals", "value": "pro"}
    assert matching(plan) == {pro.pk}
    assert matching({**plan, "op": "not_equals"}) == {free.pk, none.pk}
    assert matching({"not": plan}) == {free.pk, none.pk}
    assert matching({"field": "attributes.plan", "op": "in", "value": ["PRO", "x"]}) == {pro.pk}
    assert matching({"field": "attributes.plan", "op": "not_in", "value": ["pro"]}) == {
        free.pk,
        none.pk,
    }
    assert matching({"not": {"field": "attributes.plan", "op": "contains", "value": "ro"}}) == {
        free.pk,
        none.pk,
    }


def test_in_on_text_is_case_insensitive_as_equals_is():
    de = ContactFactory(country="DE")
    ContactFactory(country="FR")
    assert matching({"field": "country", "op": "equals", "value": "de"}) == {de.pk}
    assert matching({"field": "country", "op": "in", "value": ["de", "it"]}) == {de.pk}
    assert de.pk not in matching({"field": "country", "op": "not_in", "value": ["de"]})


# Review of the attribute change: values that are text, JSON null, booleans or exponents.
N = "attributes.n"


def test_not_equals_a_number_keeps_a_text_value():
    text = ContactFactory(attributes={"n": "abc"})
    seven = ContactFactory(attributes={"n": 7})
    ContactFactory(attributes={"n": 5})
    missing = ContactFactory(attributes={})
    assert matching({"field": N, "op": "not_equals", "value": 5}) == {
        text.pk,
        seven.pk,
        missing.pk,
    }


def test_not_in_numbers_keeps_a_text_value():
    text = ContactFactory(attributes={"n": "abc"})
    ContactFactory(attributes={"n": 5})
    missing = ContactFactory(attributes={})
    assert matching({"field": N, "op": "not_in", "value": [5]}) == {
        text.pk,
        missing.pk,
    }


def test_not_equals_text_keeps_a_json_null():
    null = ContactFactory(attributes={"n": None})
    ContactFactory(attributes={"n": "pro"})
    missing = ContactFactory(attributes={})
    assert matching({"field": N, "op": "not_equals", "value": "pro"}) == {
        null.pk,
        missing.pk,
    }


def test_not_in_text_keeps_a_json_null():
    null = ContactFactory(attributes={"n": None})
    ContactFactory(attributes={"n": "pro"})
    missing = ContactFactory(attributes={})
    assert matching({"field": N, "op": "not_in", "value": ["pro"]}) == {
        null.pk,
        missing.pk,
    }


def test_not_gt_keeps_text():
    text = ContactFactory(attributes={"n": "abc"})
    ContactFactory(attributes={"n": 500})
    missing = ContactFactory(attributes={})
    assert matching({"not": {"field": N, "op": "gt", "value": 100}}) == {
        text.pk,
        missing.pk,
    }


def test_bool_true_is_not_the_number_one():
    ContactFactory(attributes={"n": True})
    one = ContactFactory(attributes={"n": 1})
    assert matching({"field": N, "op": "equals", "value": 1}) == {one.pk}


def test_bool_equals_true():
    t = ContactFactory(attributes={"n": True})
    s = ContactFactory(attributes={"n": "TRUE"})
    ContactFactory(attributes={"n": False})
    assert matching({"field": N, "op": "equals", "value": True}) == {t.pk, s.pk}


# --- Attribute ranges and dates ------------------------------------------------------------


def test_an_attribute_between_two_numbers_compares_numbers_both_ends_included():
    low = ContactFactory(attributes={"employees": "50"})
    mid = ContactFactory(attributes={"employees": 120.5})
    high = ContactFactory(attributes={"employees": " 200 "})
    above = ContactFactory(attributes={"employees": 201})
    words = ContactFactory(attributes={"employees": "many"})
    missing = ContactFactory(attributes={})
    between = cond("attributes.employees", "between", [50, 200])
    assert matching(between) == {low.pk, mid.pk, high.pk}
    assert matching({"not": between}) == {above.pk, words.pk, missing.pk}


def test_an_attribute_date_compares_by_the_day_it_was_written_with():
    """ISO days and date-times (the date as written, no time-zone conversion); anything
    else is no date, so no positive condition holds and ``not`` includes it."""
    may_1 = ContactFactory(attributes={"renewal_date": "2026-05-01"})
    may_2 = ContactFactory(attributes={"renewal_date": "2026-05-02T23:30:00-05:00"})
    may_31 = ContactFactory(attributes={"renewal_date": "2026-05-31 08:00"})
    june = ContactFactory(attributes={"renewal_date": "2026-06-01"})
    others = {
        ContactFactory(attributes={"renewal_date": value}).pk
        for value in ("01.05.2026", "2026-5-3", "soon", 20260503, True, None, "")
    } | {ContactFactory(attributes={}).pk}
    f = "attributes.renewal_date"
    assert matching(cond(f, "before", "2026-05-02")) == {may_1.pk}
    assert matching(cond(f, "after", "2026-05-02")) == {may_31.pk, june.pk}
    assert matching(cond(f, "between", ["2026-05-02", "2026-05-31"])) == {may_2.pk, may_31.pk}
    assert matching(cond(f, "between", ["2026-05-01", "2026-05-01"])) == {may_1.pk}
    assert matching({"not": cond(f, "after", "2000-01-01")}) == others


def test_an_attribute_date_within_the_last_days_counts_back_from_today_in_the_site_zone(
    settings,
):
    settings.TIME_ZONE = "Pacific/Kiritimati"  # UTC+14: its today is often UTC's tomorrow
    today = timezone.localdate()
    days = {
        n: ContactFactory(attributes={"last_order": str(today - timedelta(days=n))})
        for n in (-1, 0, 7, 8)
    }
    stamp = ContactFactory(attributes={"last_order": f"{today}T23:59:59+14:00"})
    within = cond("attributes.last_order", "within_last_days", 7)
    assert matching(within) == {days[0].pk, days[7].pk, stamp.pk}  # not the future one
    assert matching(within, now=timezone.now() + timedelta(days=1)) == {
        days[-1].pk,
        days[0].pk,
        stamp.pk,
    }


@pytest.mark.parametrize("key", ["date", "range", "lt"])
def test_date_and_range_operators_read_an_attribute_named_like_a_lookup(key):
    old = ContactFactory(attributes={key: "2020-01-01"})
    ten = ContactFactory(attributes={key: 10})
    assert matching(cond(f"attributes.{key}", "before", "2021-01-01")) == {old.pk}
    assert matching(cond(f"attributes.{key}", "between", [5, 10])) == {ten.pk}


# An attribute key is a key whatever it is called: one named like a Django lookup or
# transform was read as that lookup (a crash, or another condition).
LOOKUP_NAMED_KEYS = ["range", "contains", "isnull", "year", "date", "exact", "in", "regex", "gt"]


@pytest.mark.parametrize("key", LOOKUP_NAMED_KEYS)
def test_an_attribute_named_like_a_lookup_is_read_as_that_key(key):
    f = f"attributes.{key}"
    pro = ContactFactory(attributes={key: "Pro"})
    ten = ContactFactory(attributes={key: "10"})
    yes = ContactFactory(attributes={key: True})
    null = ContactFactory(attributes={key: None})
    other = ContactFactory(attributes={"plan": "Pro", "n": 20})
    assert matching(cond(f, "equals", "pro")) == {pro.pk}
    assert matching(cond(f, "equals", True)) == {yes.pk}
    assert matching(cond(f, "not_equals", "pro")) == {ten.pk, yes.pk, null.pk, other.pk}
    assert matching(cond(f, "contains", "RO")) == {pro.pk}
    assert matching(cond(f, "starts_with", "1")) == {ten.pk}
    assert matching(cond(f, "in", ["PRO", 10])) == {pro.pk, ten.pk}
    assert matching(cond(f, "gt", 5)) == {ten.pk}
    assert matching(cond(f, "is_empty")) == {null.pk, other.pk}
    assert matching(cond(f, "is_not_empty")) == {pro.pk, ten.pk, yes.pk}


def test_json_float_exponent():
    big = ContactFactory(attributes={"n": 1e20})
    assert matching({"field": N, "op": "gt", "value": 100}) == {big.pk}
