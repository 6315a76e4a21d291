"""Headless Chromium through Selenium, for the browser tests and the render benchmark.

Debian's ``chromium`` and ``chromium-driver`` are used as found on PATH; the driver path is passed
explicitly, so selenium-manager never downloads anything. The flags keep Chromium off the network.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROME_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1600,1000",
)


def find_browser() -> tuple[str, str] | str:
    """``(chromium, chromedriver)`` paths, or the reason they cannot be used."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    chromium = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    if chromium is None:
        return "no chromium binary on PATH (Debian: apt-get install chromium)"
    if driver is None:
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver)"
    return chromium, driver


def open_chrome(profile: str) -> Any:
    """A headless Chromium session with a fresh profile folder ``profile``; raises when none is usable."""
    found = find_browser()
    if isinstance(found, str):
        raise RuntimeError(found)
    chromium, chromedriver = found
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (*CHROME_ARGS, f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(chromedriver), options=options)
