"""Log-in, log-out and throttling of failed log-ins (per user name and per client address)."""

import pytest
from django.conf import settings
from django.core.cache import cache

from tests.factories import UserFactory

PASSWORD = "pw-Secret-123"  # tests.factories.UserFactory's password
LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"


@pytest.fixture(autouse=True)
def _fresh_throttle(db):
    cache.clear()


def _post_login(client, username, password, ip="10.0.0.1", url=LOGIN):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)


def _form_errors(response) -> list[str]:
    return list(response.context["form"].non_field_errors())


@pytest.mark.parametrize("role", ["marketing", "sales", "admin"])
def test_each_role_can_log_in_and_reach_the_dashboard(client, role):
    user = UserFactory(username=f"login-{role}", role=role)
    response = _post_login(client, user.username, PASSWORD)
    assert response.status_code == 302
    assert response["Location"] == "/"
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert dashboard.context["user"] == user
    assert b"Log out" in dashboard.content


def test_the_login_page_is_public_and_pages_redirect_to_it(client):
    assert client.get(LOGIN).status_code == 200
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith(f"{LOGIN}?next=/")


def test_an_unknown_user_and_a_wrong_password_get_the_same_message(client):
    UserFactory(username="known", role="sales")
    wrong_password = _post_login(client, "known", "not-the-password")
    unknown_user = _post_login(client, "nobody-by-that-name", "not-the-password")
    assert wrong_password.status_code == unknown_user.status_code == 200
    assert _form_errors(wrong_password) == _form_errors(unknown_user)
    assert "correct username and password" in _form_errors(unknown_user)[0]


def test_failed_log_ins_are_throttled_per_user_name(client):
    UserFactory(username="target", role="marketing")
    limit = settings.LOGIN_THROTTLE_ATTEMPTS
    for attempt in range(limit):
        # A different address each time: only the per-user counter can trip.
        response = _post_login(client, "target", "wrong", ip=f"10.0.1.{attempt}")
        assert "Too many" not in str(_form_errors(response))
    blocked = _post_login(client, "target", PASSWORD, ip="10.0.2.1")
    assert blocked.status_code == 200, "even the right password is refused while throttled"
    message = _form_errors(blocked)[0]
    assert "Too many failed log-ins" in message
    assert f"{settings.LOGIN_THROTTLE_WINDOW} seconds" in message
    assert "_auth_user_id" not in client.session


def test_look_alike_spellings_of_a_user_name_share_its_counter(client):
    """Review finding: authentication reads the name NFKC-normalised ("ａdmin", fullwidth
    a, logs in as "admin"), the throttle counted the name as posted — each look-alike
    spelling had a counter of its own."""
    UserFactory(username="admin", role="admin")
    spellings = ["admin", "ADMIN", "\uff41dmin", "a\uff44min", "\uff21DMIN"]
    for attempt in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        _post_login(client, spellings[attempt % len(spellings)], "wrong", ip=f"10.0.6.{attempt}")
    for spelling in spellings:
        refused = _post_login(client, spelling, PASSWORD, ip="10.0.7.1")
        assert refused.status_code == 200, spelling
        assert "Too many failed log-ins" in _form_errors(refused)[0]


def test_failed_log_ins_are_throttled_per_client_address(client):
    UserFactory(username="innocent", role="sales")
    for attempt in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        _post_login(client, f"guess{attempt}", "wrong", ip="10.9.9.9")
    blocked = _post_login(client, "innocent", PASSWORD, ip="10.9.9.9")
    assert "Too many failed log-ins" in _form_errors(blocked)[0]
    elsewhere = _post_login(client, "innocent", PASSWORD, ip="10.9.9.10")
    assert elsewhere.status_code == 302


def test_the_admin_log_in_counts_on_the_same_per_name_counter(client):
    """Review finding: /admin/login/, a second password form for the same accounts (the
    staff admins), was not throttled at all — 50 wrong guesses, then the right password
    got in. Failures on either form now count against one counter."""
    UserFactory(username="ada", role="admin")
    for attempt in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        url = ADMIN_LOGIN if attempt % 2 else LOGIN
        _post_login(client, "ada", "wrong", ip=f"10.0.8.{attempt}", url=url)
    for url in (ADMIN_LOGIN, LOGIN):
        refused = _post_login(client, "ada", PASSWORD, ip="10.0.9.1", url=url)
        assert refused.status_code == 200, url
        assert "Too many failed log-ins" in _form_errors(refused)[0], url
    assert "_auth_user_id" not in client.session


def test_the_admin_log_in_counts_on_the_same_per_address_counter(client):
    UserFactory(username="ada", role="admin")
    for attempt in range(settings.LOGIN_THROTTLE_ATTEMPTS):
        _post_login(client, f"guess{attempt}", "wrong", ip="10.9.8.7", url=ADMIN_LOGIN)
    refused = _post_login(client, "ada", PASSWORD, ip="10.9.8.7", url=ADMIN_LOGIN)
    assert "Too many failed log-ins" in _form_errors(refused)[0]
    assert (
        "Too many failed log-ins"
        in _form_errors(_post_login(client, "ada", PASSWORD, ip="10.9.8.7"))[0]
    )
    assert _post_login(client, "ada", PASSWORD, ip="10.9.8.8", url=ADMIN_LOGIN).status_code == 302


def test_a_successful_log_in_resets_the_user_counter(client):
    UserFactory(username="forgetful", role="sales")
    for attempt in range(settings.LOGIN_THROTTLE_ATTEMPTS - 1):
        _post_login(client, "forgetful", "wrong", ip=f"10.0.3.{attempt}")
    assert _post_login(client, "forgetful", PASSWORD, ip="10.0.4.1").status_code == 302
    client.logout()
    _post_login(client, "forgetful", "wrong", ip="10.0.5.1")
    assert _post_login(client, "forgetful", PASSWORD, ip="10.0.5.2").status_code == 302


def test_log_out_is_a_post(client):
    user = UserFactory(username="leaver", role="marketing")
    client.force_login(user)
    assert client.get("/accounts/logout/").status_code == 405
    assert "_auth_user_id" in client.session
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == LOGIN
    assert "_auth_user_id" not in client.session


def test_the_password_change_page_needs_a_log_in(client):
    assert client.get("/accounts/password/").status_code == 302
    client.force_login(UserFactory(username="changer", role="sales"))
    assert client.get("/accounts/password/").status_code == 200


def test_a_user_without_a_role_can_log_in_but_is_refused_pages(client):
    UserFactory(username="roleless")
    assert _post_login(client, "roleless", PASSWORD).status_code == 302
    assert client.get("/").status_code == 403
