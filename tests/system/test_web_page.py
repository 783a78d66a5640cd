"""The web page at ``/`` in a real browser (Debian's headless Chromium, driven by Playwright) against
the real pipeline (``uvrd api``, ``processor`` and ``uploader`` on a broker, the tiny model), at a
desktop's width and a phone's: signing in (a wrong token refused), songs separated to stems that play,
are drawn and download, a long one cancelled, the operator's view, and a key revoked while the page is
open; then stems behind unsigned links, and a reload.  Each width signs in with an operator key of its
own, so each lists only its own tasks.

UVRD_SCREENSHOTS=DIR keeps the screenshots (each width's task list and operator's view) in DIR
(docs/web-*.png come from it); otherwise they go to the test's temporary directory.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect
from separation_service import AUTH, TOKEN, SeparationService, api_settings, start_api
from support import toml_value
from web_browser import LAYOUTS, browser_page, drop, pick, screenshot_path, separate, sign_in, task_card
from web_browser import browser  # noqa: F401  (a fixture)

from uvrd.config import OUTPUT_FORMATS
from devtools import tinymodel

pytestmark = pytest.mark.slow

SHORT_S = 2
LONG_S = 600  # still separating when the page cancels it


@pytest.fixture(scope="module")
def service(module_stack, model_dir):
    svc = SeparationService(module_stack, [tinymodel.install(model_dir)], model_dir, progress_interval=0.3,
                            heartbeat_interval=1.0)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("songs")
    return {"short": tinymodel.write_sample(d / "short song.wav", seconds=SHORT_S),
            "long": tinymodel.write_sample(d / "long song.wav", seconds=LONG_S)}


@pytest.fixture(params=list(LAYOUTS))
def layout(request, browser):
    with browser_page(browser, request.param) as (page, problems):
        yield request.param, page, problems


def api(service, path: str) -> dict:
    response = requests.get(service.url + path, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_page_separates_plays_draws_cancels_and_shows_the_fleet(service, songs, layout, tmp_path, kafka):
    name, page, problems = layout
    page.goto(service.url + "/")

    # Signing in: a wrong token is refused with a clear message, the right one opens the page.
    expect(page.locator("#login")).to_be_visible()
    sign_in(page, "not-the-token")
    expect(page.locator("#login-error")).to_have_text(re.compile(r"refused \(HTTP 401\)"))
    expect(page.locator("#separate")).to_be_hidden()
    key = f"operator-{name}"
    added = requests.post(service.url + "/v1/keys", headers=AUTH, json={"name": key, "scope": "operator"}, timeout=30)
    assert added.status_code == 201, added.text
    sign_in(page, added.json()["token"])
    expect(page.locator("#separate")).to_be_visible()
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#who")).to_have_text(f"{key} (operator)")
    # The served models, the default first; the formats the API takes.
    expect(page.locator("#model option").first).to_have_text(f"Default ({tinymodel.TINY_MODEL})")
    expect(page.locator("#format option")).to_have_text([re.compile(r"^Default \(\w+\)$"), *OUTPUT_FORMATS])

    # On a desktop the short song is dragged in, then the long one picked; on a phone both are picked
    # at once. Each song is its own task, and the short one (first) runs to the end.
    if name == "desktop":
        drop(page, [songs["short"]])
        separate(page, [songs["short"]])
    else:
        pick(page, [songs["short"], songs["long"]])
        separate(page, [songs["short"], songs["long"]])
    short = task_card(page, songs["short"].name)
    expect(short).to_have_attribute("data-state", "succeeded", timeout=120_000)
    assert short.locator("progress").evaluate("bar => bar.value") == 1

    # The long song: its progress moves, then Cancel ends it, cancelled, with no stems.
    if name == "desktop":
        pick(page, [songs["long"]])
        separate(page, [songs["long"]])
    long = task_card(page, songs["long"].name)
    expect(long).to_have_attribute("data-state", "processing", timeout=120_000)
    page.wait_for_function("bar => bar.value > 0", arg=long.locator("progress").element_handle(), timeout=60_000)
    long.get_by_role("button", name="Cancel").click()
    expect(long).to_have_attribute("data-state", "cancelled", timeout=60_000)
    expect(long.get_by_role("button", name="Cancel")).to_be_hidden()
    assert api(service, f"/v1/tasks/{long.locator('.uuid').inner_text()}")["outcome"] == "cancelled"
    expect(long.locator(".stem")).to_have_count(0)

    # The short song's stems, as the API lists them.
    task_uuid = short.locator(".uuid").inner_text()
    status = api(service, f"/v1/tasks/{task_uuid}")
    assert status["outcome"] == "succeeded"
    stems = short.locator(".stem")
    expect(stems).to_have_count(len(status["stems"]))
    assert sorted(stems.evaluate_all("items => items.map(i => i.dataset.stem)")) == sorted(status["stems"])
    for i in range(stems.count()):
        stem = stems.nth(i)
        # The player loads the stem through its signed link: its length is the song's.
        page.wait_for_function("a => a.readyState >= 1", arg=stem.locator("audio").element_handle(), timeout=30_000)
        duration = stem.locator("audio").evaluate("a => a.duration")
        assert math.isfinite(duration) and abs(duration - SHORT_S) < 0.1, duration
        # The waveform is drawn across the whole canvas, with the song's swing in it.
        expect(stem.locator("canvas")).to_have_attribute("data-wave", "drawn", timeout=30_000)
        drawn = stem.locator("canvas").evaluate("""c => {
            const {data, width, height} = c.getContext("2d").getImageData(0, 0, c.width, c.height);
            let columns = 0, tallest = 0;
            for (let x = 0; x < width; x++) {
              let top = -1, bottom = -1;
              for (let y = 0; y < height; y++) {
                if (data[(y * width + x) * 4 + 3] > 0) { if (top < 0) top = y; bottom = y; }
              }
              if (top >= 0) { columns++; tallest = Math.max(tallest, bottom - top + 1); }
            }
            return {columns, tallest, width, height};
        }""")
        assert drawn["columns"] >= 0.95 * drawn["width"] and drawn["tallest"] >= 0.2 * drawn["height"], drawn

    # Playing one: it plays.
    first = stems.first.locator("audio")
    first.evaluate("a => a.play()")
    page.wait_for_function("a => a.currentTime > 0 && !a.paused", arg=first.element_handle(), timeout=10_000)
    # Downloading one: the file the link names, whole, with no token.
    with page.expect_download() as download:
        stems.first.locator("a.download").click()
    stem_name = stems.first.get_attribute("data-stem")
    assert download.value.suggested_filename.startswith(f"{task_uuid}_{stem_name}.")
    assert Path(download.value.path()).stat().st_size == len(requests.get(
        service.url + f"/v1/tasks/{task_uuid}/stems/{stem_name}", headers=AUTH, timeout=30).content)
    page.screenshot(path=screenshot_path(name, tmp_path), full_page=True)

    # The operator's view: the worker, the queues, and a dead letter that arrives while it is open.
    page.get_by_role("tab", name="Operator").click()
    [worker] = api(service, "/v1/workers")["workers"]
    expect(page.locator("#workers tbody tr", has_text=worker["worker"])).to_have_count(1)
    queues = api(service, "/v1/queues")
    expect(page.locator("#queues td.queue")).to_have_text(
        [f"priority {q['priority']}{q['topic']}" for q in queues["tasks"]]
        + [re.compile(f"^results.*{re.escape(queues['results']['topic'])}$"), "dead letters"])
    expect(page.locator("#queues td.number")).to_have_text([re.compile(r"^\d+$")] * (len(queues["tasks"]) + 2))
    refused = service.stack.task("/nowhere.wav", model="No-Such.onnx", hook_url=None)
    kafka.send(service.stack.tasks, refused)
    letter = page.locator("#dead-letters tbody tr", has_text=refused["task_uuid"])
    expect(letter).to_contain_text("unknown model", timeout=60_000)
    # Replayed from the page: queued again once (the model is still unknown, so it comes back as a
    # second letter of the same task), and the API says a second replay is one too many.
    letter.get_by_role("button", name="Replay").click()
    expect(letter.get_by_role("button")).to_have_text("Replayed (1)", timeout=60_000)
    expect(letter.get_by_role("button")).to_be_disabled()
    expect(page.locator("#dead-letters tbody tr", has_text=refused["task_uuid"])).to_have_count(2, timeout=60_000)
    [first_letter] = [d for d in api(service, "/v1/dead-letters")["dead_letters"]
                      if d["task_uuid"] == refused["task_uuid"]][-1:]
    assert requests.post(f"{service.url}/v1/dead-letters/{first_letter['partition']}/{first_letter['offset']}/replay",
                         headers=AUTH, timeout=60).status_code == 409
    page.screenshot(path=screenshot_path(f"operator-{name}", tmp_path), full_page=True)

    # The key revoked while the page is open: the next call says so.
    assert requests.delete(f"{service.url}/v1/keys/{key}", headers=AUTH, timeout=30).status_code == 200
    expect(page.locator("#login-error")).to_have_text(re.compile(r"refused the token \(HTTP 401\)"), timeout=15_000)
    expect(page.locator("#operator")).to_be_hidden()

    assert not problems, problems


def unsigned_api(service) -> str:
    """A second api of the same deployment without api.link_secret (its stem links are unsigned, and
    open only with a token) whose public_url names a port nothing listens on: its base URL."""
    settings = {**api_settings(), "public_url": "http://127.0.0.1:9", "link_secret": ""}
    lines, section = [], None
    for line in service.config.read_text().splitlines():
        section = line if line.startswith("[") else section
        if section == "[api]" and line.split(" = ")[0] in settings:
            continue
        lines.append(line)
        if line == "[api]":
            lines += [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    config = service.stack.root / "unsigned-links.toml"
    config.write_text("\n".join(lines) + "\n")
    return start_api(service.stack, config)


def test_unsigned_links_play_with_the_token_and_a_reload_keeps_the_tasks(service, songs, browser):
    url = unsigned_api(service)
    with browser_page(browser, "desktop") as (page, problems):
        page.goto(url + "/")
        sign_in(page, TOKEN)
        pick(page, [songs["short"]])
        separate(page, [songs["short"]])
        card = task_card(page, songs["short"].name)
        expect(card).to_have_attribute("data-state", "succeeded", timeout=120_000)
        task_uuid = card.locator(".uuid").inner_text()

        # The tab keeps its token and its tasks across a reload; the stems come back.
        page.reload()
        expect(page.locator("#separate")).to_be_visible()
        card = task_card(page, songs["short"].name)
        expect(card).to_have_attribute("data-state", "succeeded", timeout=30_000)
        assert card.locator(".uuid").inner_text() == task_uuid
        stems = card.locator(".stem")
        expect(stems).to_have_count(len(api(service, f"/v1/tasks/{task_uuid}")["stems"]))

        # Each stem was fetched with the token, and plays, draws and downloads from memory.
        for i in range(stems.count()):
            stem = stems.nth(i)
            expect(stem.locator("canvas")).to_have_attribute("data-wave", "drawn", timeout=30_000)
            audio = stem.locator("audio")
            page.wait_for_function("a => a.readyState >= 1", arg=audio.element_handle(), timeout=30_000)
            assert audio.evaluate("a => a.src").startswith("blob:")
            assert abs(audio.evaluate("a => a.duration") - SHORT_S) < 0.1
        stem_name = stems.first.get_attribute("data-stem")
        with page.expect_download() as download:
            stems.first.locator("a.download").click()
        assert download.value.suggested_filename == f"{task_uuid}_{stem_name}.wav"
        assert Path(download.value.path()).read_bytes() == requests.get(
            f"{url}/v1/tasks/{task_uuid}/stems/{stem_name}", headers=AUTH, timeout=30).content
        assert not problems, problems
