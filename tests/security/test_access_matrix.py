"""The access matrix: one table says, for every URL name, what each persona gets.

``test_access_walk`` derives its expectations from what each view *declares*; this table
states them independently, so changing a view's ``access`` without updating the table (or
adding a URL without an entry) fails here. Per URL name it gives the status class for GET
and, where the view accepts writes, for the write method (POST; PATCH for API detail
routes), for anonymous / marketing / sales / admin, and — for views about one object —
both for an object owned by the persona and for another owner's object. Today every role
works on the team's objects, so ``other`` defaults to the same classes as ``own``; a future
"own records only" rule changes one column here.

Status classes: LOGIN = anonymous HTML → 302 to the log-in page, anonymous API → 401/403;
DENY = 403; OK = any of 200/201/204/301/302/400/404/405/409 (a 4xx form or input error is
fine; 401/403 and 5xx never are); PUBLIC = like OK and never a log-in redirect; HIDDEN =
404 (an object only its owner may see, such as a notice: another user's does not exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from django.urls import resolve, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from crm.models import CampaignCost, Notification, Segment, Stage
from nurture.models import Enrollment, Trigger
from reports.review.models import ReviewItem
from scoring.models import RescoreRun
from tests.factories import (
    CampaignFactory,
    CompanyFactory,
    ContactFactory,
    DealFactory,
    UserFactory,
)
from tests.nurture.factories import EmailTemplateFactory, ProgramFactory, StepFactory
from tests.scoring.factories import AssignmentRuleFactory, EngagementRuleFactory

from .test_access_walk import walkable_urls

OK, DENY, LOGIN, PUBLIC, HIDDEN = "ok", "deny", "login", "public", "hidden"
ROLES = ("marketing", "sales", "admin")
PERSONAS = ("anonymous", *ROLES)


def cols(marketing: str, sales: str, admin: str, anonymous: str = LOGIN) -> dict[str, str]:
    return {"anonymous": anonymous, "marketing": marketing, "sales": sales, "admin": admin}


EVERY = cols(OK, OK, OK)
MKT = cols(OK, DENY, OK)  # marketing and admin
SLS = cols(DENY, OK, OK)  # sales and admin
ADM = cols(DENY, DENY, OK)  # admin only
OPEN = cols(PUBLIC, PUBLIC, PUBLIC, anonymous=PUBLIC)
OWN_ONLY = cols(HIDDEN, HIDDEN, HIDDEN)  # every role, but another user's object is a 404


@dataclass(frozen=True)
class Row:
    get: dict[str, str]
    write: dict[str, str] | None = None  # None: the view accepts no writes
    obj: str | None = None  # the object type behind ``pk``
    kwargs: dict[str, str] = field(default_factory=dict)  # other URL kwargs → object type
    other: dict[str, str] | None = None  # another owner's object; None = same as own
    other_write: dict[str, str] | None = None


ACCESS_TABLE: dict[str, Row] = {
    # --- Home, reports (reports/urls.py) ---------------------------------------------------
    "home": Row(EVERY),
    "reports-index": Row(EVERY),
    "reports-drilldown": Row(EVERY),
    "report-funnel": Row(EVERY),
    "report-email": Row(EVERY),
    "report-cost-per-mql": Row(EVERY),
    "report-leads": Row(EVERY),
    "report-revenue": Row(EVERY),
    "report-customers": Row(EVERY),
    "review": Row(EVERY, MKT),
    "review-item": Row(EVERY, MKT, obj="review_item"),
    "review-now": Row(EVERY, MKT, obj="review_item"),
    "review-cadence": Row(EVERY, MKT, obj="review_item"),
    "review-baseline": Row(EVERY, MKT, obj="review_item"),
    "review-content-group": Row(EVERY, MKT, kwargs={"content_type": "=ebook"}),
    "review-export": Row(EVERY, kwargs={"fmt": "=csv"}),
    "long-term-trend": Row(EVERY),
    # --- CRM pages -----------------------------------------------------------------------
    "crm:contact-list": Row(EVERY),
    "crm:contact-create": Row(EVERY, EVERY),
    "crm:contact-bulk": Row(EVERY, EVERY),
    "crm:contact-detail": Row(EVERY, obj="contact"),
    "crm:contact-edit": Row(EVERY, EVERY, obj="contact"),
    "crm:contact-merge": Row(EVERY, EVERY, obj="contact"),
    "crm:contact-data": Row(ADM, obj="contact"),
    "crm:contact-erase": Row(ADM, ADM, obj="contact"),
    "crm:company-list": Row(EVERY),
    "crm:company-create": Row(EVERY, MKT),
    "crm:company-detail": Row(EVERY, obj="company"),
    "crm:company-edit": Row(EVERY, MKT, obj="company"),
    "crm:campaign-list": Row(EVERY),
    "crm:campaign-create": Row(EVERY, MKT),
    "crm:campaign-detail": Row(EVERY, obj="campaign"),
    "crm:campaign-edit": Row(EVERY, MKT, obj="campaign"),
    "crm:cost-create": Row(EVERY, MKT, obj="campaign"),
    "crm:cost-edit": Row(EVERY, MKT, obj="campaign", kwargs={"cost_pk": "cost"}),
    "crm:cost-delete": Row(EVERY, MKT, obj="campaign", kwargs={"cost_pk": "cost"}),
    "crm:import-upload": Row(MKT, MKT),
    "crm:import-preview": Row(MKT, MKT),
    "crm:segment-list": Row(EVERY),
    "crm:segment-create": Row(MKT, MKT),
    "crm:segment-builder": Row(MKT, MKT),
    "crm:segment-preview": Row(MKT, MKT),
    "crm:segment-detail": Row(EVERY, obj="segment"),
    "crm:segment-edit": Row(MKT, MKT, obj="segment"),
    "crm:segment-members": Row(EVERY, MKT, obj="segment"),
    "crm:segment-refresh": Row(EVERY, MKT, obj="segment"),
    "crm:segment-delete": Row(EVERY, MKT, obj="segment"),
    "crm:segment-why": Row(EVERY, obj="segment", kwargs={"contact_pk": "contact"}),
    "crm:mql-queue": Row(EVERY, SLS),
    "crm:mql-detail": Row(EVERY, obj="mql"),
    "crm:mql-accept": Row(EVERY, SLS, obj="mql"),
    "crm:mql-reject": Row(EVERY, SLS, obj="mql"),
    "crm:mql-claim": Row(EVERY, SLS, obj="mql"),
    "crm:deal-list": Row(EVERY),
    "crm:deal-create": Row(EVERY, SLS),
    "crm:deal-detail": Row(EVERY, obj="deal"),
    "crm:deal-win": Row(EVERY, SLS, obj="deal"),
    "crm:deal-lose": Row(EVERY, SLS, obj="deal"),
    "crm:contact-churn": Row(EVERY, SLS, kwargs={"contact_pk": "contact"}),
    "crm:notification-list": Row(EVERY),
    "crm:notification-open": Row(EVERY, EVERY, obj="notification", other_write=OWN_ONLY),
    "crm:notification-read-all": Row(EVERY, EVERY),
    # --- Nurture pages -------------------------------------------------------------------
    "nurture:program-list": Row(EVERY),
    "nurture:program-create": Row(EVERY, MKT),
    "nurture:program-detail": Row(EVERY, obj="program"),
    "nurture:program-edit": Row(EVERY, MKT, obj="program"),
    "nurture:program-status": Row(EVERY, MKT, obj="program"),
    "nurture:program-enroll": Row(EVERY, MKT, obj="program"),
    "nurture:step-add": Row(EVERY, MKT, obj="program"),
    "nurture:step-edit": Row(EVERY, MKT, obj="program", kwargs={"step_id": "step"}),
    "nurture:step-move": Row(EVERY, MKT, obj="program", kwargs={"step_id": "step"}),
    "nurture:step-delete": Row(EVERY, MKT, obj="program", kwargs={"step_id": "step"}),
    "nurture:trigger-add": Row(EVERY, MKT, obj="program"),
    "nurture:trigger-delete": Row(EVERY, MKT, obj="program", kwargs={"trigger_id": "trigger"}),
    "nurture:enrollment-exit": Row(
        EVERY, MKT, obj="program", kwargs={"enrollment_id": "enrollment"}
    ),
    "nurture:template-list": Row(EVERY),
    "nurture:template-create": Row(EVERY, MKT),
    "nurture:template-edit": Row(EVERY, MKT, obj="template"),
    "nurture:template-preview": Row(EVERY, MKT, obj="template"),
    "nurture:template-test": Row(EVERY, MKT, obj="template"),
    "nurture:outbox": Row(MKT),
    "nurture:outbox-body": Row(MKT, kwargs={"name": "=missing.log", "index": "=0"}),
    # --- Scoring pages -------------------------------------------------------------------
    "scoring:rules": Row(MKT, ADM),
    "scoring:rule-new": Row(ADM, ADM),
    "scoring:rule-edit": Row(ADM, ADM, obj="rule"),
    "scoring:rule-toggle": Row(ADM, ADM, obj="rule"),
    "scoring:rule-history": Row(MKT, obj="rule"),
    "scoring:backtest": Row(ADM, ADM),
    "scoring:settings": Row(ADM, ADM),
    "scoring:assignment": Row(ADM, ADM),
    "scoring:assignment-delete": Row(ADM, ADM, obj="assignment"),
    "scoring:rescore": Row(ADM, ADM),
    "scoring:rescore-detail": Row(MKT, obj="rescore"),
    "scoring:health": Row(EVERY),
    # --- Public: tracking, unsubscribe, webhooks, log-in, health ---------------------------
    "nurture_public:open": Row(OPEN, kwargs={"token": "=not-a-token"}),
    "nurture_public:click": Row(OPEN, kwargs={"token": "=not-a-token"}),
    "nurture_public:unsubscribe": Row(OPEN, OPEN, kwargs={"token": "=not-a-token"}),
    "nurture_public:webhook-postmark": Row(OPEN, OPEN),
    "nurture_public:webhook-mailgun": Row(OPEN, OPEN),
    "nurture_public:webhook-ses": Row(OPEN, OPEN),
    "login": Row(OPEN, OPEN),
    "logout": Row(OPEN),
    "password_change": Row(EVERY, EVERY),
    "healthz": Row(OPEN),
    # --- API (/api/v1/; router names) ------------------------------------------------------
    "api:api-root": Row(EVERY),
    "api-schema": Row(EVERY),
    "api-docs": Row(EVERY),
    "api:company-list": Row(EVERY, MKT),
    "api:company-detail": Row(EVERY, MKT, obj="company"),
    "api:contact-list": Row(EVERY, EVERY),
    "api:contact-upsert": Row(EVERY, EVERY),
    "api:contact-detail": Row(EVERY, EVERY, obj="contact"),
    "api:contact-history": Row(EVERY, ADM, obj="contact"),
    "api:contact-score": Row(EVERY, obj="contact"),
    "api:contact-personal-data": Row(ADM, obj="contact"),
    "api:contact-erase": Row(ADM, ADM, obj="contact"),
    "api:campaign-list": Row(EVERY, MKT),
    "api:campaign-detail": Row(EVERY, MKT, obj="campaign"),
    "api:campaign-costs": Row(EVERY, MKT, obj="campaign"),
    "api:campaign-cost": Row(EVERY, MKT, obj="campaign", kwargs={"cost_id": "cost"}),
    "api:activity-list": Row(EVERY, MKT),
    "api:activity-detail": Row(EVERY, obj="activity"),
    "api:segment-list": Row(EVERY, MKT),
    "api:segment-preview": Row(EVERY, MKT),
    "api:segment-detail": Row(EVERY, MKT, obj="segment"),
    "api:segment-members": Row(EVERY, MKT, obj="segment"),
    "api:segment-members-remove": Row(EVERY, MKT, obj="segment"),
    "api:mql-list": Row(EVERY),
    "api:mql-accept": Row(EVERY, SLS, obj="mql"),
    "api:mql-reject": Row(EVERY, SLS, obj="mql"),
    "api:deal-list": Row(EVERY, SLS),
    "api:deal-detail": Row(EVERY, SLS, obj="deal"),
    "api:deal-win": Row(EVERY, SLS, obj="deal"),
    "api:deal-lose": Row(EVERY, SLS, obj="deal"),
    "api:notification-list": Row(EVERY),
    "api:notification-read": Row(EVERY, EVERY),
    "api:scoring-rule-list": Row(EVERY, ADM),
    "api:scoring-rule-detail": Row(EVERY, ADM, obj="rule"),
    "api:scoring-rule-versions": Row(EVERY, obj="rule"),
    "api:scoring-settings": Row(EVERY, ADM),
    "api:scoring-rescore": Row(MKT, ADM),
    "api:scoring-rescore-run": Row(MKT, obj="rescore"),
    "api:scoring-backtest": Row(MKT, MKT),
    "api:program-list": Row(EVERY, MKT),
    "api:program-detail": Row(EVERY, MKT, obj="program"),
    "api:program-enrollments": Row(EVERY, MKT, obj="program"),
    "api:program-steps": Row(EVERY, MKT, obj="program"),
    "api:email-template-list": Row(EVERY, MKT),
    "api:email-template-detail": Row(EVERY, MKT, obj="template"),
    "api:report-api": Row(EVERY, kwargs={"name": "=funnel"}),
    "api:report-review-api": Row(EVERY),
}


def _key(url: str, match) -> str:
    name = match.view_name
    return f"api:{name}" if url.startswith("/api/v1/") and ":" not in name else name


def routed_names() -> set[str]:
    names = set()
    for url, _view in walkable_urls():
        names.add(_key(url, resolve(url)))
    return names


def test_every_url_name_has_an_entry_in_the_table():
    missing = sorted(routed_names() - set(ACCESS_TABLE))
    assert not missing, "\n".join(f"add {name} to ACCESS_TABLE" for name in missing)


def test_the_table_names_no_url_that_is_gone():
    stale = sorted(set(ACCESS_TABLE) - routed_names())
    assert not stale, f"remove from ACCESS_TABLE (no such URL any more): {stale}"


def _owned_objects(owner) -> dict:
    """One object of every type, owned (where the type has an owner) by ``owner``."""
    now = timezone.now()
    owner = owner or UserFactory(username="m-owner-of-anonymous", role="sales")
    campaign = CampaignFactory(owner=owner)
    contact = ContactFactory(owner=owner)
    mql = ContactFactory(owner=owner, stage=Stage.MQL, stage_changed_at=now)
    program = ProgramFactory(campaign=campaign, created_by=owner)
    template = EmailTemplateFactory()
    return {
        "contact": contact,
        "mql": mql,
        "company": CompanyFactory(owner=owner),
        "campaign": campaign,
        "cost": CampaignCost.objects.create(
            campaign=campaign,
            amount=100,
            category=CampaignCost.Category.choices[0][0],
            period_start=now.date() - timedelta(days=30),
            period_end=now.date(),
        ),
        "deal": DealFactory(contact=contact, owner=owner),
        "segment": Segment.objects.create(
            name=f"Seg of {owner}", kind=Segment.Kind.STATIC, owner=owner
        ),
        "program": program,
        "step": StepFactory(program=program, position=1, template=template),
        "trigger": Trigger.objects.create(program=program, kind=Trigger.Kind.MANUAL),
        "enrollment": Enrollment.objects.create(
            contact=contact, program=program, entered_at=now - timedelta(days=1)
        ),
        "template": template,
        "rule": EngagementRuleFactory(),
        "assignment": AssignmentRuleFactory(user=owner),
        "rescore": RescoreRun.objects.create(requested_by=owner),
        "review_item": ReviewItem.objects.create(
            type=ReviewItem.Type.PROGRAM,
            object_id=program.pk,
            name=program.name,
            owner=owner,
            started_at=now - timedelta(days=100),
            first_review_days=90,
            cadence_days=90,
        ),
        "activity": contact.activities.create(kind="page_visit", occurred_at=now),
        "notification": Notification.objects.create(
            user=owner, text=f"New MQL: {mql}", url=mql.get_absolute_url()
        ),
    }


def _url(name: str, row: Row, objects: dict) -> str:
    kwargs = {}
    if row.obj:
        kwargs["pk"] = objects[row.obj].pk
    for kwarg, source in row.kwargs.items():
        kwargs[kwarg] = source[1:] if source.startswith("=") else objects[source].pk
    return reverse(name.removeprefix("api:") if name.startswith("api:") else name, kwargs=kwargs)


def _write_method(view) -> str | None:
    actions = getattr(view, "actions", None)
    if actions is None:
        return "post"
    for method in ("post", "patch", "delete"):
        if method in actions:
            return method
    return None


def _problem(expect: str, response, is_api: bool) -> str | None:
    status = response.status_code
    to_login = status == 302 and response.get("Location", "").startswith("/accounts/login/")
    if status >= 500:
        return f"server error {status}"
    if expect == LOGIN:
        ok = status in (401, 403) if is_api else to_login
        return None if ok else f"expected a log-in demand, got {status}"
    if expect == DENY:
        return None if status == 403 else f"expected 403, got {status}"
    if expect == HIDDEN:
        return None if status == 404 else f"expected 404, got {status}"
    if status in (401, 403) or to_login:
        return f"expected access, got {status} {response.get('Location', '')}"
    return None


def _persona(persona: str):
    return None if persona == "anonymous" else UserFactory(username=f"m-{persona}", role=persona)


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
def test_access_matrix(persona, client, settings, tmp_path):
    settings.EMAIL_FILE_PATH = str(tmp_path)
    user = _persona(persona)
    html, api = client, APIClient()
    if user is not None:
        html.force_login(user)
        api.force_login(user)
    other_owner = UserFactory(username="m-other-owner", role="sales")
    columns = {"own": _owned_objects(user), "other": _owned_objects(other_owner)}
    problems = []
    for name, row in ACCESS_TABLE.items():
        for column, objects in columns.items():
            if column == "other" and not (row.obj or row.kwargs):
                continue  # not about an object: one column
            url = _url(name, row, objects)
            view = resolve(url).func
            is_api = url.startswith("/api/")
            agent = api if is_api else html
            get_expect = (row.other if column == "other" and row.other else row.get)[persona]
            checks = [("get", get_expect)]
            if row.write is not None:
                write = row.other_write if column == "other" and row.other_write else row.write
                method = _write_method(view)
                if method:
                    checks.append((method, write[persona]))
            for method, expect in checks:
                response = getattr(agent, method)(url, {} if method != "get" else None)
                problem = _problem(expect, response, is_api)
                if problem:
                    problems.append(f"{method.upper()} {url} [{name}, {column}]: {problem}")
    assert not problems, f"as {persona}:\n" + "\n".join(problems)
