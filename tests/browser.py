"""Headless Chromium for the dashboard tests and screenshots: Debian's `chromium` and
`chromium-driver` through selenium. Missing, it fails loudly: `scripts/ensure-chromium` installs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

# Wide enough for the overview's tiles and cards side by side, as on an operator's screen.
WINDOW = (1400, 1000)
# A page of ours renders in milliseconds; this bounds a stuck browser, not a slow page.
PAGE_LOAD_TIMEOUT_S = 15


class ChromiumMissing(RuntimeError):
    pass


def find_chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise ChromiumMissing(
            "headless Chromium is not installed (need `chromium` and `chromedriver` on the "
            "PATH): run scripts/ensure-chromium, or apt-get install chromium chromium-driver"
        )
    return browser, driver


@contextmanager
def chromium(window: tuple[int, int] = WINDOW) -> Iterator[webdriver.Chrome]:
    browser, driver_path = find_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={window[0]},{window[1]}",
    ):
        options.add_argument(argument)
    # An explicit driver path: selenium never tries to download one.
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
    try:
        yield driver
    finally:
        driver.quit()
