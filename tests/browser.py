"""Headless Chromium for the page tests: Debian's ``chromium`` driven by Playwright for Python.

Never a browser download: the binary is ``/usr/bin/chromium`` (``.ci/run`` installs it with
apt when it is missing). Each test gets a fresh profile directory, and keeps screenshots under
``tests/artifacts/browser/`` (ignored by git; the path is printed).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from tests.stack import REPO_ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Page, Playwright

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "browser"


class Browser:
    """One Chromium with its own profile; ``page()`` opens tabs, ``shot()`` keeps a picture."""

    def __init__(self, playwright: Playwright, profile: Path, test_name: str) -> None:
        self.context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1100, "height": 720},
        )
        self.test_name = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name)
        self.errors: list[str] = []
        self.shots = 0

    def page(self, url: str) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.goto(url)
        return page

    def shot(self, page: Page, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.shots += 1
        path = ARTIFACTS / f"{self.test_name}-{self.shots}-{label}.png"
        page.screenshot(path=str(path))
        print(f"screenshot: {path}")
        return path

    def close(self) -> None:
        self.context.close()
