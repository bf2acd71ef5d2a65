"""factory_boy factories for the CRM core (apps add theirs in tests/<app>/factories.py)."""

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone

from crm import models


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    password = factory.django.Password("pw-Secret-123")

    @factory.post_generation
    def role(self, create, extracted, **kwargs):
        if create and extracted:
            # get_or_create: transactional tests (live server, threads) flush the groups
            # that the data migration created.
            self.groups.add(Group.objects.get_or_create(name=extracted)[0])
            if extracted == "admin":
                self.is_staff = True
                self.save(update_fields=["is_staff"])


def rejection_reasons() -> None:
    """The reasons the data migration creates, again: a transactional test (live server,
    threads) starts from a flushed database, which keeps no data-migration rows."""
    from importlib import import_module

    migration = import_module("crm.migrations.0004_sales_rejection_reasons")
    for position, (code, label, outcome) in enumerate(migration.REASONS, start=1):
        models.RejectionReason.objects.get_or_create(
            code=code, defaults={"label": label, "outcome": outcome, "position": position}
        )


class CompanyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Company

    name = factory.Faker("company")
    domain = factory.Sequence(lambda n: f"company{n}.example")
    industry = "Software"


class ContactFactory(factory.django.DjangoModelFactory):
    """Creates through the model; use crm.services.contact_create when history matters."""

    class Meta:
        model = models.Contact
        skip_postgeneration_save = True  # the score hook writes its own row

    email = factory.Sequence(lambda n: f"contact{n}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")
    created_at = factory.LazyFunction(timezone.now)
    stage_changed_at = factory.SelfAttribute("created_at")

    @factory.post_generation
    def score(obj, create, extracted, **kwargs):
        """``ContactFactory(score=40)``: a cached score set directly (the row itself is
        made by the database trigger on insert), for tests of lists and conditions."""
        if create and extracted is not None:
            score_set(obj, extracted)


def score_set(contact, score: int) -> None:
    """Set a contact's cached score directly, bypassing the ledger (test set-up only)."""
    models.ContactScore.objects.filter(contact=contact).update(score=score)


class CampaignFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Campaign

    name = factory.Sequence(lambda n: f"Campaign {n}")
    status = models.Campaign.Status.ACTIVE
    start_date = factory.LazyFunction(lambda: (timezone.now() - timedelta(days=60)).date())


class ActivityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Activity

    contact = factory.SubFactory(ContactFactory)
    kind = models.ActivityKind.PAGE_VISIT
    occurred_at = factory.LazyFunction(timezone.now)


class DealFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Deal

    contact = factory.SubFactory(ContactFactory)
    amount = 1000
    created_at = factory.LazyFunction(timezone.now)
