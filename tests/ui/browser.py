"""A real browser for the console's tests: Debian's headless Chromium, driven through
its own chromedriver by Selenium (never a browser downloaded at test time).

`make test-deps` installs `chromium` and `chromium-driver` where it can (root, apt-get).
`Browser` wraps the few things the tests do: open a page, fill and submit, click, wait
for a condition, and save a screenshot.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER_PATHS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
WIDTH, HEIGHT = 1200, 900
MAX_SCREENSHOT_HEIGHT = 1600
T = TypeVar("T")


def _binary(candidates: tuple[str, ...], name: str) -> str:
    for candidate in (shutil.which(name), *candidates):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"{name} is not installed: run `make test-deps` (as root on Debian, it installs "
        "chromium and chromium-driver), or `apt-get install chromium chromium-driver`"
    )


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = _binary(CHROMIUM_PATHS, "chromium")
    for argument in (
        "--headless=new",
        "--no-sandbox",  # as root, in containers: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        f"--window-size={WIDTH},{HEIGHT}",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=_binary(CHROMEDRIVER_PATHS, "chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Browser:
    driver: webdriver.Chrome
    base_url: str
    screenshots: Path | None = None

    def open(self, path: str) -> None:
        self.driver.get(f"{self.base_url}{path}")

    @property
    def path(self) -> str:
        url: str = self.driver.current_url
        return url.removeprefix(self.base_url)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        text: str = self.find(css).text
        return text

    def fill(self, fields: dict[str, str]) -> None:
        for name, value in fields.items():
            field = self.find(f'[name="{name}"]')
            field.clear()
            field.send_keys(value)

    def click(self, css: str) -> None:
        self.press(self.find(css))

    def press(self, element: WebElement) -> None:
        # Scrolled there first: after a screenshot beyond the viewport, chromedriver no
        # longer scrolls to what it clicks by itself.
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def wait(self, condition: Callable[[], T], what: str, timeout: float = 30) -> T:
        """The first truthy value of `condition` (elements may be replaced meanwhile: the
        live parts are swapped in as they change)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
                if value:
                    return value
            except (StaleElementReferenceException, WebDriverException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; at {self.path}")
            time.sleep(0.1)

    def wait_for(self, css: str, timeout: float = 30) -> WebElement:
        return self.wait(lambda: (self.all(css) or [None])[0], css, timeout)

    def accept_dialog(self) -> None:
        self.wait(lambda: self.driver.switch_to.alert, "a dialog").accept()

    def console_errors(self) -> list[str]:
        """What the page logged as an error (a Content-Security-Policy violation, a
        script failure)."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries if e.get("level") == "SEVERE"]

    def screenshot(self, name: str, *, width: int = WIDTH, height: int | None = None) -> None:
        """Saves the page laid out `width` wide, from its top to its end (or `height`), as
        `name`.png, when the test was asked for screenshots (`KRITEN_SCREENSHOTS_DIR`)."""
        if self.screenshots is None:
            return
        self.screenshots.mkdir(parents=True, exist_ok=True)
        self.driver.set_window_size(width, HEIGHT)
        time.sleep(0.3)  # the new layout
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        full = int(metrics["cssContentSize"]["height"])
        clip = {
            "x": 0,
            "y": 0,
            # The window's width: a capture beyond the viewport has no scrollbar.
            "width": int(self.driver.execute_script("return window.innerWidth")),
            "height": min(height or full, full, MAX_SCREENSHOT_HEIGHT),
            "scale": 1,
        }
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        (self.screenshots / f"{name}.png").write_bytes(base64.b64decode(shot["data"]))
        self.driver.set_window_size(WIDTH, HEIGHT)
