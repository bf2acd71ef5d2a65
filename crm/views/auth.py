"""Log-in with throttling, log-out and password change."""

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError

from crm import throttle
from crm.roles import EVERYONE, PUBLIC, Role, has_role

THROTTLED_MESSAGE = "Too many failed log-ins. Wait %(seconds)s seconds and try again."


class LoginThrottleMixin:
    """Refuse further attempts once a user name or address failed too often.

    Every form that checks a password mixes this in — the app's log-in and the Django
    admin's — so a guesser gains nothing by switching forms: both count on the same
    per-name and per-address counters (crm.throttle). The same generic message is shown
    for an unknown user and a wrong password, so the form does not reveal which accounts
    exist.
    """

    def clean(self):
        username = self.data.get("username", "")
        ip = throttle.client_ip(self.request) if self.request else ""
        if throttle.login_blocked(username, ip):
            raise ValidationError(
                THROTTLED_MESSAGE,
                code="throttled",
                params={"seconds": settings.LOGIN_THROTTLE_WINDOW},
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            throttle.login_failed(username, ip)
            raise
        throttle.login_succeeded(username)
        return cleaned


class ThrottledAuthenticationForm(LoginThrottleMixin, AuthenticationForm):
    """The app's log-in form (/accounts/login/)."""


class ThrottledAdminAuthenticationForm(LoginThrottleMixin, AdminAuthenticationForm):
    """The Django admin's log-in form (/admin/login/, see crm.admin_site).

    Like the site, it lets in staff of the admin role only: anyone else is refused with
    the form's "staff account" message instead of being signed in to a site that would
    then refuse them.
    """

    def confirm_login_allowed(self, user):
        super().confirm_login_allowed(user)
        if not has_role(user, Role.ADMIN):
            raise ValidationError(
                self.error_messages["invalid_login"],
                code="invalid_login",
                params={"username": self.username_field.verbose_name},
            )


class LoginView(auth_views.LoginView):
    access = PUBLIC
    form_class = ThrottledAuthenticationForm
    redirect_authenticated_user = True


class LogoutView(auth_views.LogoutView):
    access = PUBLIC


class PasswordChangeView(auth_views.PasswordChangeView):
    access = EVERYONE
    success_url = "/"

    def form_valid(self, form):
        messages.success(self.request, "Your password was changed.")
        return super().form_valid(form)
