"""The nurture app."""

from django.apps import AppConfig


class NurtureConfig(AppConfig):
    name = "nurture"

    def ready(self) -> None:
        from anymail.signals import tracking

        from .webhooks import on_tracking

        tracking.connect(on_tracking, dispatch_uid="nurture.webhooks.on_tracking")
