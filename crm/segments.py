"""Segment definitions compiled to one database query; stored membership kept current.

(Implemented by the segments issue; the handlers below are the core's hooks.)
"""

from .events import handler


@handler("in_transaction")
def on_activities_recorded(event) -> None:
    """Re-evaluate dynamic segments for the contacts touched by a batch."""


@handler("in_transaction")
def on_stage_changed(event) -> None:
    """Re-evaluate dynamic segments for contacts whose stage changed."""


@handler("in_transaction")
def on_contacts_changed(event) -> None:
    """Re-evaluate dynamic segments for contacts whose profile changed."""
