"""Headless Chromium for the page tests: Debian's chromium driven by Playwright, or a skip with the reason."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager

import pytest

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium on PATH, or the binary $E2_CHROMIUM names; skips the test where there is none."""
    configured = os.environ.get("E2_CHROMIUM")
    if configured:
        if not os.access(configured, os.X_OK):
            pytest.skip(f"E2_CHROMIUM={configured} is not an executable file")
        return configured
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium; or set E2_CHROMIUM)")
    return path


@contextmanager
def chromium_page(width: int = 1280, height: int = 900):
    """A Playwright page in headless Chromium (Playwright only drives it; its own browsers are not used)."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS[1:], headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()
