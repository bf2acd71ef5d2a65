"""Nurture services (writes): enrollment, sending, tracking and provider events."""
