"""Factories and helpers for the segment tests."""

import factory

from crm.models import Contact, Segment
from crm.segments import compile_definition


class SegmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Segment

    name = factory.Sequence(lambda n: f"Segment {n}")
    kind = Segment.Kind.DYNAMIC
    definition = factory.LazyFunction(lambda: {"all": []})


def matching(definition, **kwargs) -> set[int]:
    """Ids of the contacts a definition selects (a fresh evaluation)."""
    return set(
        Contact.objects.filter(compile_definition(definition, **kwargs)).values_list(
            "pk", flat=True
        )
    )
