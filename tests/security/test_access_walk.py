"""Walk every URL pattern as anonymous, as a user without a role and as each role (GET).

Expectations come from each view's declared ``access`` (``crm.roles.view_access``), so a new
page is covered the moment its URL exists:

* public views never ask for a log-in;
* anonymous users are sent to the log-in page (HTML) or get 401/403 (API);
* a user without a role gets 403;
* a role outside the view's ``access.read`` gets 403;
* a role inside it never gets 403 or a server error.

Every view except the Django admin must declare its access; a view that forgets is refused
(deny by default), proven with a throw-away view in a test URLconf.
"""

import re
import uuid

import pytest
from django.http import HttpResponse
from django.urls import URLPattern, URLResolver, get_resolver, path, resolve
from django.urls.resolvers import RegexPattern, RoutePattern
from rest_framework.views import APIView

import crm.urls
from crm.roles import Role, view_access
from tests.factories import UserFactory

MISSING_PK = "999999"  # detail views 404 after their permission check
CONVERTER_VALUES = {
    "int": MISSING_PK,
    "str": "walk",
    "slug": "walk",
    "path": "walk",
    "uuid": str(uuid.UUID(int=0)),
}
PERSONAS = ["anonymous", "no_role", *[str(r) for r in Role]]


def _fill_route(route: str) -> str | None:
    def value(match: re.Match) -> str:
        converter = match.group(1) or "str"
        if converter not in CONVERTER_VALUES:
            raise LookupError(converter)
        return CONVERTER_VALUES[converter]

    try:
        return re.sub(r"<(?:(\w+):)?(\w+)>", value, route)
    except LookupError:
        return None


def _fill_regex(regex: str) -> str | None:
    if "(?P<format>" in regex:  # DRF format-suffix duplicates of the same views
        return None
    text = regex.removeprefix("^").removesuffix("$").removesuffix("\\Z")
    text = re.sub(r"\(\?P<\w+>[^)]*\)", MISSING_PK, text)
    text = text.replace("\\.", ".").replace("\\-", "-").replace("/?", "/")
    if re.search(r"[\\()\[\]?*+|^$]", text):
        return None  # a pattern we cannot fill generically
    return text


def _walk(patterns, prefix=""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin" or entry.app_name == "admin":
                continue
            part = _piece(entry.pattern)
            if part is None:
                continue
            yield from _walk(entry.url_patterns, prefix + part)
        elif isinstance(entry, URLPattern):
            part = _piece(entry.pattern)
            if part is not None:
                yield "/" + prefix + part, entry.callback


def _piece(pattern) -> str | None:
    if isinstance(pattern, RoutePattern):
        return _fill_route(str(pattern))
    if isinstance(pattern, RegexPattern):
        return _fill_regex(pattern.regex.pattern)
    return None


def walkable_urls() -> list[tuple[str, object]]:
    """(url, view) for every pattern we can fill, that resolves back to its own view."""
    found = {}
    for url, callback in _walk(get_resolver().url_patterns):
        try:
            match = resolve(url)
        except Exception:  # noqa: BLE001 - an unfillable pattern; shadowed ones are skipped
            continue
        if match.func is callback and url not in found:
            found[url] = callback
    return sorted(found.items())


def _is_api(view) -> bool:
    cls = getattr(view, "cls", None)
    return isinstance(cls, type) and issubclass(cls, APIView)


def _all_views(patterns):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            if entry.namespace == "admin" or entry.app_name == "admin":
                continue
            yield from _all_views(entry.url_patterns)
        else:
            yield entry


def test_every_view_declares_its_access():
    undeclared = [
        f"{p.pattern} -> {getattr(p.callback, '__module__', '?')}."
        f"{getattr(p.callback, '__name__', p.callback)}"
        for p in _all_views(get_resolver().url_patterns)
        if view_access(p.callback) is None
    ]
    assert not undeclared, "views without an access rule:\n" + "\n".join(undeclared)


def test_the_walk_covers_the_known_pages():
    urls = dict(walkable_urls())
    for must in ("/", "/accounts/login/", "/healthz", "/api/v1/"):
        assert must in urls, f"{must} not walked; walked: {sorted(urls)}"


def _persona_user(persona: str):
    if persona == "anonymous":
        return None
    if persona == "no_role":
        return UserFactory(username="walk-no-role")
    return UserFactory(username=f"walk-{persona}", role=persona)


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS)
def test_access_walk(client, persona):
    from rest_framework.test import APIClient

    user = _persona_user(persona)
    api = APIClient()
    if user is not None:
        client.force_login(user)
        api.force_login(user)
    problems = []
    for url, view in walkable_urls():
        rule = view_access(view)
        if rule is None:
            continue  # reported by test_every_view_declares_its_access
        is_api = _is_api(view)
        try:
            response = (api if is_api else client).get(url)
        except Exception as exc:  # noqa: BLE001 - a server error, reported with the URL
            problems.append(f"{url}: raised {exc.__class__.__name__}: {exc}")
            continue
        status = response.status_code
        location = response.get("Location", "")
        sent_to_login = status == 302 and location.startswith("/accounts/login/")
        if rule.public:
            if sent_to_login or status in (401, 403):
                problems.append(f"{url}: public, but {status} {location}")
        elif persona == "anonymous":
            ok = status in (401, 403) if is_api else sent_to_login
            if not ok:
                problems.append(f"{url}: anonymous got {status} {location}")
        elif persona == "no_role":
            if status != 403:
                problems.append(f"{url}: user without a role got {status}")
        elif persona not in rule.read:
            if status != 403:
                problems.append(f"{url}: {persona} may not read, got {status}")
        elif status == 403 or status >= 500:
            problems.append(f"{url}: {persona} may read, got {status}")
    assert not problems, f"as {persona}:\n" + "\n".join(problems)


def undeclared_view(request):
    return HttpResponse("should never be served")


# The whole site plus one view that forgot to declare its access (the site's templates
# reverse its URL names, and its 403 page is the one served).
urlpatterns = [path("forgot-to-declare/", undeclared_view), *crm.urls.urlpatterns]
handler403 = crm.urls.handler403
handler404 = crm.urls.handler404


@pytest.mark.django_db
@pytest.mark.urls(__name__)
@pytest.mark.parametrize("role", [str(r) for r in Role])
def test_a_view_without_access_is_refused_to_every_role(client, role):
    client.force_login(UserFactory(username=f"deny-{role}", role=role))
    response = client.get("/forgot-to-declare/")
    assert response.status_code == 403
    assert b"should never be served" not in response.content


@pytest.mark.django_db
@pytest.mark.urls(__name__)
def test_a_view_without_access_sends_anonymous_to_log_in(client):
    response = client.get("/forgot-to-declare/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
