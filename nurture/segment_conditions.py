"""Segment condition "in / not in a nurture program" (settings.SEGMENT_CONDITION_PROVIDERS).

``{"program": {"id": 5, "state": "in"}}`` matches contacts with a live (active or waiting)
enrollment in program 5; ``"not_in"`` matches those without one.
"""

from __future__ import annotations

from django.db.models import Exists, OuterRef, Q

from .models import LIVE_STATES, Enrollment

STATES = ("in", "not_in")


class ProgramCondition:
    @staticmethod
    def validate(condition: dict) -> None:
        body = condition.get("program")
        if not isinstance(body, dict):
            raise ValueError('use {"program": {"id": <program id>, "state": "in" | "not_in"}}.')
        pid = body.get("id")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise ValueError("id must be a program id (a positive whole number).")
        if body.get("state", "in") not in STATES:
            raise ValueError('state must be "in" or "not_in".')
        extra = set(body) - {"id", "state"}
        if extra:
            raise ValueError(f"unknown key(s): {', '.join(sorted(map(str, extra)))}.")

    @staticmethod
    def build(condition: dict) -> Q:
        body = condition["program"]
        live = Exists(
            Enrollment.objects.filter(
                contact_id=OuterRef("pk"), program_id=body["id"], state__in=LIVE_STATES
            )
        )
        return Q(live) if body.get("state", "in") == "in" else ~Q(live)


CONDITIONS = {"program": ProgramCondition()}
