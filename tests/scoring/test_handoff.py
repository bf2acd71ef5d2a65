"""Owner assignment for new MQLs: rules first, then territory, then round-robin in the DB."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from crm import lifecycle
from crm.ingest import activities_record
from crm.models import Notification, Stage, UserProfile
from crm.models.choices import ActivityKind as K
from scoring import tasks
from scoring.handoff import owners_assign, owners_notify
from scoring.models import LedgerEntry, PendingOwnerEmail, RoundRobinCursor, ScoringSettings
from tests.factories import CompanyFactory, ContactFactory, UserFactory
from tests.reliability.smtp import RefusingSMTPServer
from tests.services import celery_conf, closed_loopback_port

from .factories import AssignmentRuleFactory, EngagementRuleFactory

pytestmark = pytest.mark.django_db


def test_round_robin_alternates_between_sales_users_and_keeps_its_place_in_the_db():
    a = UserFactory(username="rr-a", role="sales")
    b = UserFactory(username="rr-b", role="sales")
    contacts = [ContactFactory() for _ in range(3)]
    chosen = owners_assign(contact_ids=[c.pk for c in contacts[:2]])
    assert sorted(chosen.values()) == sorted([a.pk, b.pk])
    assert RoundRobinCursor.objects.get(pool="").position == 2
    third = owners_assign(contact_ids=[contacts[2].pk])
    assert third[contacts[2].pk] == chosen[contacts[0].pk]


def test_users_who_do_not_accept_leads_are_skipped():
    a = UserFactory(username="rr-a", role="sales")
    b = UserFactory(username="rr-b", role="sales")
    UserProfile.objects.create(user=b, accepts_leads=False)
    contacts = [ContactFactory() for _ in range(2)]
    assert set(owners_assign(contact_ids=[c.pk for c in contacts]).values()) == {a.pk}


def test_an_assignment_rule_wins_over_round_robin():
    UserFactory(username="rr-a", role="sales")
    fintech = UserFactory(username="fin", role="sales")
    AssignmentRuleFactory(order=1, industry="Fintech", user=fintech)
    c = ContactFactory(company=CompanyFactory(industry="fintech"))
    assert owners_assign(contact_ids=[c.pk]) == {c.pk: fintech.pk}
    c.refresh_from_db()
    assert c.owner == fintech


def test_a_territory_sends_the_lead_to_the_local_seller():
    UserFactory(username="rr-a", role="sales")
    local = UserFactory(username="dach", role="sales")
    UserProfile.objects.create(user=local, territory="DE, AT")
    c = ContactFactory(country="AT")
    assert owners_assign(contact_ids=[c.pk]) == {c.pk: local.pk}


def test_a_contact_with_an_owner_keeps_it():
    UserFactory(username="rr-a", role="sales")
    owner = UserFactory(username="mine", role="sales")
    c = ContactFactory(owner=owner)
    assert owners_assign(contact_ids=[c.pk]) == {}


@pytest.mark.parametrize("gone", ["inactive", "opted_out", "no_longer_sales"])
def test_a_requalified_lead_whose_owner_no_longer_takes_leads_is_assigned_again(gone):
    taker = UserFactory(username="rr-a", role="sales")
    old = UserFactory(username="left", role="sales")
    if gone == "inactive":
        old.is_active = False
        old.save()
    elif gone == "opted_out":
        UserProfile.objects.create(user=old, accepts_leads=False)
    else:
        old.groups.clear()
    c = ContactFactory(owner=old)
    assert owners_assign(contact_ids=[c.pk]) == {c.pk: taker.pk}
    c.refresh_from_db()
    assert c.owner == taker


def test_an_admin_owner_keeps_the_lead():
    UserFactory(username="rr-a", role="sales")
    boss = UserFactory(username="boss", role="admin")
    c = ContactFactory(owner=boss)
    assert owners_assign(contact_ids=[c.pk]) == {}


# --- Review findings: who a lead goes to when its owner or a rule's user left ------------


def record(contact, kind=K.DEMO_REQUESTED, at=None):
    return activities_record(
        items=[
            {
                "kind": kind,
                "contact": contact.pk,
                "occurred_at": at or timezone.now() - timedelta(minutes=1),
            }
        ]
    )


@pytest.mark.parametrize("gone", ["opted_out", "no_longer_sales"])
def test_an_assignment_rule_does_not_hand_leads_to_someone_who_no_longer_takes_them(gone):
    ScoringSettings.objects.create(pk=1, mql_threshold=30)
    EngagementRuleFactory(points=30, activity_kind=K.DEMO_REQUESTED)
    taker = UserFactory(username="rr-a", role="sales")
    fin = UserFactory(username="fin", role="sales")
    AssignmentRuleFactory(order=1, industry="Fintech", user=fin)
    if gone == "opted_out":
        UserProfile.objects.create(user=fin, accepts_leads=False)
    else:
        fin.groups.clear()
        from django.contrib.auth.models import Group

        fin.groups.add(Group.objects.get_or_create(name="marketing")[0])
    c = ContactFactory(company=CompanyFactory(industry="fintech"))
    record(c)
    c.refresh_from_db()
    assert c.stage == Stage.MQL
    assert c.owner == taker, f"assigned to {c.owner}"
    assert not Notification.objects.filter(user=fin).exists()


def test_a_requalified_lead_of_a_departed_rep_is_not_notified_to_them_when_nobody_takes_leads():
    ScoringSettings.objects.create(pk=1, mql_threshold=30, recycle_policy="reset")
    EngagementRuleFactory(points=30, activity_kind=K.DEMO_REQUESTED)
    old = UserFactory(username="left", role="sales")
    c = ContactFactory(owner=old, created_at=timezone.now() - timedelta(days=5))
    record(c, at=timezone.now() - timedelta(days=3))
    c.refresh_from_db()
    assert c.stage == Stage.MQL
    lifecycle.stage_change(
        contact=c,
        to_stage=Stage.RECYCLED,
        reason_code="no_budget",
        at=timezone.now() - timedelta(days=2),
    )
    old.is_active = False
    old.save()
    Notification.objects.all().delete()
    with celery_conf(task_always_eager=True):
        record(c)
    c.refresh_from_db()
    assert c.stage == Stage.MQL
    # The rep left: the lead must not stay theirs nor be announced to them.
    assert not Notification.objects.filter(user=old).exists()
    assert c.owner_id is None  # released to the team's unassigned queue


def test_recycling_takes_back_what_each_rule_gave_and_keeps_penalties():
    """The documented choice (scoring.services.recycle_apply): halve takes half of each
    positive rule's points, rounded down per rule; penalties stay."""
    from scoring.models import Rule

    ScoringSettings.objects.create(pk=1, mql_threshold=1000, recycle_policy="halve")
    EngagementRuleFactory(points=41, activity_kind=K.DEMO_REQUESTED)
    EngagementRuleFactory(points=-10, activity_kind=K.PAGE_VISIT)
    c = ContactFactory(created_at=timezone.now() - timedelta(days=5))
    record(c, kind=K.DEMO_REQUESTED)
    record(c, kind=K.PAGE_VISIT)
    c.refresh_from_db()
    assert c.scorecard.score == 31
    lifecycle.stage_change(contact=c, to_stage=Stage.MQL)
    lifecycle.stage_change(contact=c, to_stage=Stage.RECYCLED, reason_code="no_budget")
    c.refresh_from_db()
    engagement = LedgerEntry.objects.filter(contact=c, rule__kind=Rule.Kind.ENGAGEMENT)
    assert sum(e.points for e in engagement) == 21 - 10  # 41 − 20 (half, rounded down) − 10
    assert c.scorecard.score == 11


def test_saving_the_settings_leaves_the_round_robin_cursor_alone(monkeypatch):
    """Review finding: the settings save wrote back the cursor it had loaded, so a hand-off
    that moved it meanwhile was undone and some reps got extra leads (the cursors now live
    in their own rows; the decay run's clock, still in the settings row, is kept alike)."""
    from scoring import services

    conf = ScoringSettings.objects.create(pk=1)
    RoundRobinCursor.objects.create(pool="", position=3)
    load = ScoringSettings.load
    ran = timezone.now()

    def load_then_hand_off():
        loaded = load()
        RoundRobinCursor.objects.filter(pool="").update(position=7)  # a hand-off
        ScoringSettings.objects.filter(pk=conf.pk).update(decay_ran_at=ran)  # a decay run
        return loaded

    monkeypatch.setattr(ScoringSettings, "load", staticmethod(load_then_hand_off))
    services.settings_update(data={"mql_threshold": 80})
    conf.refresh_from_db()
    assert (conf.mql_threshold, conf.decay_ran_at) == (80, ran)
    assert RoundRobinCursor.objects.get(pool="").position == 7


# --- owner emails: owed from the hand-off's commit, sent once, never dropped -----------------


def _handed_off(*owners) -> list:
    """One new MQL per owner, handed off as a batch does: notices and pending emails."""
    contacts = [ContactFactory(owner=owner, stage=Stage.MQL) for owner in owners]
    owners_notify(contact_ids=[c.pk for c in contacts])
    return contacts


@pytest.fixture
def smtp(settings):
    """Django's real SMTP backend, pointed by the test at a loopback port."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    return settings


def test_the_owner_email_is_retried_and_kept_while_the_mail_server_refuses_it(smtp, caplog):
    rep = UserFactory(username="rep", role="sales")
    (c,) = _handed_off(rep)
    with RefusingSMTPServer() as server:
        smtp.EMAIL_PORT = server.port
        # Eager, Celery runs the retries at once (a worker waits 1, 2, 4 … minutes).
        result = tasks.mql_owners_email.apply(args=[[c.pk]])
    assert result.state == "FAILURE"  # not a silent success with nothing sent
    assert server.attempts == 1 + tasks.mql_owners_email.max_retries
    assert "gave up after 6 retries" in caplog.text
    pending = PendingOwnerEmail.objects.get()  # still owed: the minute's sweep sends it
    assert (pending.owner, pending.contact, pending.claim) == (rep, c, "")
    smtp.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # the server is back
    assert tasks.mql_owners_email.apply(args=[[c.pk]]).result == 1
    assert [m.to for m in mail.outbox] == [[rep.email]]
    assert not PendingOwnerEmail.objects.exists()
    assert tasks.mql_owners_email.apply(args=[[c.pk]]).result == 0  # a duplicate sends nothing


def test_the_retries_mail_only_the_owners_the_mail_server_refused(smtp):
    ann = UserFactory(username="ann", role="sales")
    bob = UserFactory(username="bob", role="sales")
    ids = [c.pk for c in _handed_off(ann, bob)]
    with RefusingSMTPServer(refused={bob.email}) as server:
        smtp.EMAIL_PORT = server.port
        assert tasks.mql_owners_email.apply(args=[ids]).state == "FAILURE"
        assert server.delivered == [[ann.email]]  # once, whatever bob's six retries
        server.refused = set()  # bob's mailbox is back
        assert tasks.mql_owners_email.apply(args=[ids]).result == 1
    assert server.delivered == [[ann.email], [bob.email]]
    assert not PendingOwnerEmail.objects.exists()


def test_an_unreachable_mail_server_is_retried_too(smtp):
    (c,) = _handed_off(UserFactory(username="rep", role="sales"))
    smtp.EMAIL_PORT = closed_loopback_port()
    assert tasks.mql_owners_email.apply(args=[[c.pk]]).state == "FAILURE"
    assert PendingOwnerEmail.objects.filter(claim="").count() == 1


def test_the_sweep_sends_what_no_task_sent_and_leaves_young_or_claimed_rows(smtp, caplog):
    rep = UserFactory(username="rep", role="sales")
    young, old, claimed = _handed_off(rep, rep, rep)
    a_while_ago = timezone.now() - timedelta(minutes=5)
    PendingOwnerEmail.objects.exclude(contact=young).update(created_at=a_while_ago)
    PendingOwnerEmail.objects.filter(contact=claimed).update(
        claim="another-worker", claimed_until=timezone.now() + timedelta(minutes=5)
    )
    smtp.EMAIL_PORT = closed_loopback_port()
    assert tasks.owner_emails_sweep() == 0  # the server is down: logged, kept, next minute
    assert "next minute" in caplog.text
    smtp.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert tasks.owner_emails_sweep() == 1
    assert f"/crm/contacts/{old.pk}/" in mail.outbox[0].body
    assert f"/crm/contacts/{young.pk}/" not in mail.outbox[0].body  # its own task sends it
    assert set(PendingOwnerEmail.objects.values_list("contact", flat=True)) == {
        young.pk,
        claimed.pk,
    }
    # A claim whose worker died lapses after its lease: then the sweep sends it.
    PendingOwnerEmail.objects.filter(contact=claimed).update(claimed_until=a_while_ago)
    assert tasks.owner_emails_sweep() == 1
    assert f"/crm/contacts/{claimed.pk}/" in mail.outbox[1].body


def test_the_sweep_gives_up_on_an_email_refused_for_days_with_an_error(smtp, caplog):
    rep = UserFactory(username="rep", role="sales")
    stale, fresh = _handed_off(rep, rep)
    PendingOwnerEmail.objects.filter(contact=stale).update(
        created_at=timezone.now() - timedelta(days=3)
    )
    smtp.EMAIL_PORT = closed_loopback_port()
    tasks.owner_emails_sweep()
    assert f"gave up emailing {rep.email} about 1 new MQLs" in caplog.text
    assert list(PendingOwnerEmail.objects.values_list("contact", flat=True)) == [fresh.pk]
    assert Notification.objects.filter(user=rep).count() == 2  # the notices remain


def test_round_robin_is_fair_inside_a_territory_whatever_leads_come_in_between():
    """Two reps cover DE, a third covers nothing; DE and US leads alternate. Each pool has
    its own cursor: the DE leads alternate between the DE reps (one cursor for every lead
    gave all of them to the same rep), the US leads go round everyone."""
    a = UserFactory(username="de-a", role="sales")
    b = UserFactory(username="de-b", role="sales")
    other = UserFactory(username="other", role="sales")
    UserProfile.objects.create(user=a, territory="DE")
    UserProfile.objects.create(user=b, territory="DE, AT")
    de_owners, us_owners = [], []
    for _ in range(6):
        de, us = ContactFactory(country="DE"), ContactFactory(country="US")
        de_owners.append(owners_assign(contact_ids=[de.pk])[de.pk])
        us_owners.append(owners_assign(contact_ids=[us.pk])[us.pk])
    assert de_owners == [a.pk, b.pk] * 3
    assert us_owners == [a.pk, b.pk, other.pk] * 2
    at = ContactFactory(country="AT")  # the AT pool (rep b alone) starts its own cursor
    assert owners_assign(contact_ids=[at.pk]) == {at.pk: b.pk}
    positions = dict(RoundRobinCursor.objects.values_list("pool", "position"))
    assert positions == {"DE": 6, "": 6, "AT": 1}
