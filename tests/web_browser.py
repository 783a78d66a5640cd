"""The web page in Debian's headless Chromium, driven by Playwright (no browser download): the
browser, a fresh tab at a desktop's or a phone's size with the problems it reports, and what a user
does on the page.  Used by tests/system/test_web_page*.py."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LAYOUTS = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 375, "height": 812}, "is_mobile": True, "has_touch": True,
              "device_scale_factor": 2},
}


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (make system-deps)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@contextlib.contextmanager
def browser_page(browser, layout: str):
    """A fresh tab (its own sessionStorage) at *layout*, and the problems it reports."""
    context = browser.new_context(**LAYOUTS[layout], accept_downloads=True)
    page = context.new_page()
    problems = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # Every console error but the browser's note on the 401s this test provokes (a CSP violation,
    # a failed script, an unexpected refusal would show here).
    page.on("console", lambda m: m.type == "error" and "status of 401" not in m.text
            and problems.append(f"console: {m.text}"))
    try:
        yield page, problems
    finally:
        context.close()


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """UVRD_SCREENSHOTS=DIR keeps the screenshots in DIR (docs/web-*.png come from it)."""
    directory = Path(os.environ.get("UVRD_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"web-{name}.png"


def task_card(page, name: str):
    return page.locator("#task-list > li", has=page.locator(".name", has_text=re.compile(f"^{re.escape(name)}$")))


def sign_in(page, token: str) -> None:
    page.locator("#token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def drop(page, songs: list[Path]) -> None:
    """Drag the files onto the drop zone, as a desktop user does."""
    files = [{"name": song.name, "data": base64.b64encode(song.read_bytes()).decode()} for song in songs]
    transfer = page.evaluate_handle("""files => {
        const transfer = new DataTransfer();
        for (const f of files) {
          const bytes = Uint8Array.from(atob(f.data), c => c.charCodeAt(0));
          transfer.items.add(new File([bytes], f.name, {type: "audio/wav"}));
        }
        return transfer;
    }""", files)
    for event in ("dragenter", "dragover", "drop"):
        page.locator("#drop").dispatch_event(event, {"dataTransfer": transfer})


def pick(page, songs: list[Path]) -> None:
    """Choose the files with the file picker, as a phone user does."""
    page.locator("#files").set_input_files(songs)


def separate(page, songs: list[Path]) -> None:
    for song in songs:
        expect(page.locator("#picked")).to_contain_text(song.name)
    button = page.locator("#separate-button")
    expect(button).to_have_text("Separate" if len(songs) == 1 else f"Separate {len(songs)} songs")
    button.click()
    expect(page.locator("#picked li")).to_have_count(0)
