"""The nurture app."""
