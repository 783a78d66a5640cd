"""The web page with named keys, in Debian's headless Chromium against ``uvrd api`` on a real broker
(no processor: the tasks stay queued, which is all a list needs): a submit key sees its own tasks
and no operator tab, in every browser it signs in from; another submit key sees none of them; an
operator key sees the operator tab, and there every key's tasks.

UVRD_SCREENSHOTS=DIR keeps the screenshots (web-keys-*.png) in DIR; otherwise they go to the test's
temporary directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from api_stacks import AUTH
from web_browser import browser_page, pick, screenshot_path, separate, sign_in, task_card
from web_browser import browser  # noqa: F401  (a fixture)
from devtools import tinymodel


@pytest.fixture(scope="module")
def served(broker, tmp_path_factory):
    from api_stacks import make_stack

    stack = make_stack(broker, tmp_path_factory.mktemp("page-keys"), "page-keys")
    yield stack.start(workers=1)
    stack.close()


def add_key(api, name: str, scope: str) -> str:
    response = requests.post(api.url + "/v1/keys", headers=AUTH, json={"name": name, "scope": scope}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["token"]


def song(tmp_path: Path, name: str) -> Path:
    return tinymodel.write_sample(tmp_path / name, seconds=1)


def test_a_submit_key_sees_only_its_tasks_and_no_operator_tab_and_an_operator_sees_both(served, browser, tmp_path):
    alice, bob, ops = (add_key(served, "page-alice", "submit"), add_key(served, "page-bob", "submit"),
                       add_key(served, "page-ops", "operator"))
    mine, theirs = song(tmp_path, "alice song.wav"), song(tmp_path, "bob song.wav")

    # Alice submits a song: it is listed (queued: no processor here), and there is no operator tab.
    with browser_page(browser, "desktop") as (page, problems):
        page.goto(served.url + "/#operator")  # asked for, but not hers to see
        sign_in(page, alice)
        expect(page.locator("#who")).to_have_text("page-alice (submit)")
        expect(page.locator("#separate")).to_be_visible()
        expect(page.get_by_role("tab", name="Separate")).to_be_visible()
        expect(page.get_by_role("tab", name="Operator")).to_be_hidden()
        expect(page.locator("#operator")).to_be_hidden()
        pick(page, [mine])
        separate(page, [mine])
        card = task_card(page, mine.name)
        expect(card).to_have_attribute("data-state", "queued", timeout=30_000)
        alice_task = card.locator(".uuid").inner_text()
        page.screenshot(path=screenshot_path("keys-submit", tmp_path), full_page=True)
        assert not problems, problems

    # Alice in a second browser sees the same list, from the API.
    with browser_page(browser, "phone") as (page, problems):
        page.goto(served.url + "/")
        sign_in(page, alice)
        card = task_card(page, mine.name)
        expect(card).to_have_attribute("data-state", "queued", timeout=30_000)
        expect(card.locator(".uuid")).to_have_text(alice_task)
        expect(page.locator("#task-list > li")).to_have_count(1)
        expect(page.get_by_role("tab", name="Operator")).to_be_hidden()
        assert not problems, problems

    # Bob sees none of Alice's tasks, only the one he submits.
    with browser_page(browser, "desktop") as (page, problems):
        page.goto(served.url + "/")
        sign_in(page, bob)
        expect(page.locator("#no-tasks")).to_be_visible()
        pick(page, [theirs])
        separate(page, [theirs])
        expect(task_card(page, theirs.name)).to_have_attribute("data-state", "queued", timeout=30_000)
        bob_task = task_card(page, theirs.name).locator(".uuid").inner_text()
        # Once the API's list has his task, it has nothing else.
        expect(task_card(page, theirs.name)).to_have_attribute("data-listed", "true", timeout=30_000)
        expect(page.locator("#task-list > li")).to_have_count(1)
        expect(task_card(page, mine.name)).to_have_count(0)
        expect(page.get_by_role("tab", name="Operator")).to_be_hidden()
        assert not problems, problems

    # The operator: both tabs, its own (empty) list, and every key's tasks in the operator's view.
    with browser_page(browser, "desktop") as (page, problems):
        page.goto(served.url + "/")
        sign_in(page, ops)
        expect(page.locator("#who")).to_have_text("page-ops (operator)")
        expect(page.get_by_role("tab", name="Separate")).to_be_visible()
        expect(page.locator("#no-tasks")).to_be_visible()
        page.get_by_role("tab", name="Operator").click()
        expect(page.locator("#operator")).to_be_visible()
        for task_uuid, key in ((alice_task, "page-alice"), (bob_task, "page-bob")):
            row = page.locator(f'#all-tasks tbody tr[data-task="{task_uuid}"]')
            expect(row).to_have_count(1, timeout=15_000)
            expect(row.locator("td.key")).to_have_text(key)
        page.screenshot(path=screenshot_path("keys-operator", tmp_path), full_page=True)
        assert not problems, problems
