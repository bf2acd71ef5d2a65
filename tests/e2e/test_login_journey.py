"""A marketing user logs in, sees the dashboard and the navigation, and logs out."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import login
from tests.factories import UserFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_marketing_logs_in_sees_the_dashboard_and_logs_out(page):
    user = UserFactory(username="maya-e2e", first_name="Maya", last_name="Lind", role="marketing")

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))

    login(page, user)
    nav = page.locator("nav.mainnav")
    expect(nav).to_be_visible()
    expect(nav.get_by_role("link", name="Dashboard")).to_be_visible()
    expect(nav.get_by_role("link", name="Segments")).to_be_visible()
    expect(nav.get_by_role("link", name="Admin")).to_have_count(0)
    expect(page.locator(".usermenu")).to_contain_text("Maya Lind")
    expect(page.locator(".usermenu .badge")).to_have_text("marketing")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    expect(page.locator("nav.mainnav")).to_have_count(0)

    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def test_a_wrong_password_shows_the_generic_message(page):
    UserFactory(username="sam-e2e", role="sales")
    page.goto("/accounts/login/")
    page.fill("#id_username", "sam-e2e")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    expect(page.get_by_role("alert")).to_contain_text("correct username and password")
