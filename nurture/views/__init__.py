"""Nurture pages: programs and builder, templates, outbox; public tracking views."""
