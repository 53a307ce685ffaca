"""Headless Chromium for the page tests: Debian's ``chromium`` driven by Playwright for Python.

Never a browser download: the binary is ``/usr/bin/chromium`` (``.ci/run`` installs it with
apt when it is missing). Each test gets a fresh profile directory, and keeps screenshots under
``tests/artifacts/browser/`` (ignored by git; the path is printed).
"""

from __future__ import annotations

import json
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


# What a person does and sees on the chat page.

ANSWERS = "article.assistant"
TIMEOUT_MS = 30_000


def send(page: Page, prompt: str, params: dict | None = None, model: str | None = None) -> None:
    if params is not None:
        if not page.is_visible("#params"):
            page.click("#options summary")
        page.fill("#params", json.dumps(params))
    if model is not None:
        page.select_option("#model", model)
    page.fill("#prompt", prompt)
    page.click("#send")


def answer_text(page: Page, index: int = -1) -> str:
    answers = page.locator(f"{ANSWERS} .content")
    return answers.nth(index if index >= 0 else answers.count() + index).text_content() or ""


def wait_words(page: Page, words: int) -> None:
    page.wait_for_function(
        """(n) => {
            const all = document.querySelectorAll("article.assistant .content");
            const last = all[all.length - 1];
            return last && last.textContent.split(/\\s+/).filter(Boolean).length >= n;
        }""",
        arg=words,
        timeout=TIMEOUT_MS,
    )


def wait_status(page: Page, status: str, timeout: int = TIMEOUT_MS) -> None:
    page.wait_for_selector(f'#status[data-status="{status}"]', timeout=timeout)


def wait_answer(page: Page, status: str, index: int = 1) -> None:
    """Wait until the index-th answer (1-based) has ``status``."""
    page.wait_for_function(
        """([i, s]) => {
            const all = document.querySelectorAll("article.assistant");
            return all.length >= i && all[i - 1].dataset.status === s;
        }""",
        arg=[index, status],
        timeout=TIMEOUT_MS,
    )


def users(page: Page) -> list[str]:
    return [text or "" for text in page.locator("article.user").all_text_contents()]
