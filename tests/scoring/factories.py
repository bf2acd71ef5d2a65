"""factory_boy factories for scoring."""

import factory

from crm.models.choices import ActivityKind
from scoring import models


class FitRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Rule

    name = factory.Sequence(lambda n: f"Fit rule {n}")
    kind = models.Rule.Kind.FIT
    field = "job_title"
    operator = "contains"
    value = "VP"
    points = 15


class EngagementRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Rule

    name = factory.Sequence(lambda n: f"Engagement rule {n}")
    kind = models.Rule.Kind.ENGAGEMENT
    activity_kind = ActivityKind.PAGE_VISIT
    frequency = models.Rule.Frequency.EVERY_TIME
    points = 10


class NegativeRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Rule

    name = factory.Sequence(lambda n: f"Negative rule {n}")
    kind = models.Rule.Kind.NEGATIVE
    negative = models.Rule.Negative.UNSUBSCRIBED
    points = -20


class AssignmentRuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.AssignmentRule

    name = factory.Sequence(lambda n: f"Assignment {n}")
