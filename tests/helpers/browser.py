"""Headless Chromium for the real-browser tests: Debian's ``chromium`` and ``chromium-driver``.

``python -m tests.helpers.browser`` (part of ``make test``'s set-up) installs them with apt as
root when missing, as the stack installs PostgreSQL; no browser can be downloaded from
elsewhere here. ``chromium()`` drives one through its chromedriver (WebDriver, with
Selenium), with the flags this closed network needs: without the background-networking ones
Chromium keeps trying (and failing) to reach Google's hosts.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from workers.devstack.apt import install_missing

CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMEDRIVER: Final = Path("/usr/bin/chromedriver")
PACKAGES: Final = {"chromium": CHROMIUM, "chromium-driver": CHROMEDRIVER}
FLAGS: Final = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions",
    "--disable-default-apps", "--metrics-recording-only", "--mute-audio",
)  # fmt: skip


def install() -> list[str]:
    return install_missing(PACKAGES)


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium (its own empty profile), quit when the block ends."""
    with tempfile.TemporaryDirectory(prefix="flowpay-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
        try:
            yield driver
        finally:
            driver.quit()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    done = install()
    print("installed " + " ".join(done) if done else "chromium and chromedriver are present")
