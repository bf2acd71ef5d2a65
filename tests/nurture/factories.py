"""Factories for nurture tests."""

import factory

from nurture import models
from tests.factories import CampaignFactory, ContactFactory


class ProgramFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Program

    name = factory.Sequence(lambda n: f"Program {n}")
    campaign = factory.SubFactory(CampaignFactory)
    status = models.Program.Status.ACTIVE


class EmailTemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.EmailTemplate

    name = factory.Sequence(lambda n: f"Template {n}")
    subject = "Hello {{ contact.first_name|default:'there' }}"
    text_body = "Hi {{ contact.first_name }}, read more at https://example.com/guide\n"
    html_body = (
        "<html><body><p>Hi {{ contact.first_name }}</p>"
        '<a href="https://example.com/guide?a=1&amp;b=2">Guide</a>'
        '<a href="{{ unsubscribe_url }}">Unsubscribe</a></body></html>'
    )


class StepFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Step

    program = factory.SubFactory(ProgramFactory)
    position = factory.Sequence(lambda n: n)
    kind = models.Step.Kind.EMAIL
    template = factory.Maybe(
        factory.LazyAttribute(lambda s: s.kind == models.Step.Kind.EMAIL),
        factory.SubFactory(EmailTemplateFactory),
        None,
    )


class TriggerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = models.Trigger

    program = factory.SubFactory(ProgramFactory)
    kind = models.Trigger.Kind.MANUAL


__all__ = ["ContactFactory", "EmailTemplateFactory", "ProgramFactory", "StepFactory"]
