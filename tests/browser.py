"""Headless Chromium for the browser tests, started the way pipeline/sources.py starts it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.sources import CHROME_FLAGS

CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM = "/usr/bin/chromium"

needs_chromium = pytest.mark.skipif(
    not CHROMEDRIVER.exists(), reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)


def wait_for(check: Callable[[], object], what: str, timeout: float = 15.0, every: float = 0.2) -> object:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def chrome(window: str = "1280,880"):
    """A headless Chromium webdriver; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [*CHROME_FLAGS, f"--window-size={window}"]:
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
