"""Leadcycle: the Django project package and the CRM core app."""

from .celery import app as celery_app

__all__ = ["celery_app"]
