"""A headless Chromium for the page tests (the demo page, the review page).

Uses the Debian ``chromium`` and ``chromedriver`` (nothing is downloaded); skipped locally
when they are missing, a failure in CI.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from _procs import in_ci, need_binary

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--disable-default-apps", "--window-size=1000,1100", "--lang=zh-CN"]


@pytest.fixture(scope="module")
def browser():
    chromium = need_binary("chromium", "/usr/bin/chromium")
    driver_path = need_binary("chromedriver", "/usr/bin/chromedriver")
    if in_ci():  # CI installs the dev extra: a missing selenium is a failure there
        from selenium import webdriver
    else:
        webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not try to download anything
    profile = tempfile.mkdtemp(prefix="lawclf-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
