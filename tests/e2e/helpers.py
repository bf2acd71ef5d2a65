"""Shared steps of the browser journeys: full-page shots of the main pages, reference data."""

from __future__ import annotations

import re

from tests.e2e.conftest import RESULTS

PAGES = RESULTS / "pages"


def shoot_pages(page, role: str, paths: dict[str, str]) -> None:
    """Full-page screenshots of ``paths`` into test-results/pages/<role>-<name>.png.

    Every page must answer without a server error: a layout review is useless on a 500.
    """
    PAGES.mkdir(parents=True, exist_ok=True)
    for name, path in paths.items():
        response = page.goto(path)
        assert response is not None, path
        assert response.status < 400, f"{path}: {response.status}"
        page.screenshot(path=str(PAGES / f"{role}-{name}.png"), full_page=True)


def path_of(url: str) -> str:
    """The path and query of an absolute URL (emails link to SITE_URL)."""
    return re.sub(r"^https?://[^/]+", "", url)
