"""Quotas, usage and idempotent submits on a real broker with two ``uvrd api`` of one deployment
(each one worker) and no processor, so every accepted task stays queued.

What was queued is read from outside: the task topic and the status topic.  Each test has keys of
its own, so it counts only its own tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime

import pytest
import requests

from api_stacks import make_stack
from support import bearer, wait_until
from devtools import tinymodel

# How long a record written through one api may take to reach the other: the bound of a wait, not a claim.
SPREAD_S = 10.0



class Deployment:
    def __init__(self, first, second, kafka):
        self.first, self.second, self.kafka = first, second, kafka
        self.apis = (first, second)
        self.stack = first.stack

    def add_key(self, name: str, **quota) -> str:
        response = self.first.post("/v1/keys", headers=self.first.AUTH, json={"name": name, "scope": "submit", **quota})
        assert response.status_code == 201, response.text
        assert response.json()["quota"] == {"max_active": None, "audio_seconds_per_day": None, **quota}
        token = response.json()["token"]
        for api in self.apis:
            wait_until(lambda api=api: api.get("/v1/usage", headers=bearer(token)).status_code == 200, SPREAD_S,
                       f"{api.url} to know the key {name}")
        return token

    def tasks_of(self, name: str) -> list[dict]:
        """The task messages key *name* has on the default priority's topic."""
        tasks = [json.loads(r.value) for r in self.kafka.read_all(self.stack.topics.tasks)]
        return [t for t in tasks if t.get("key") == name]

    def queued_status(self, task_uuid: str) -> dict:
        records = [json.loads(r.value) for r in self.kafka.read_all(self.stack.topics.status)
                   if r.key == task_uuid.encode()]
        return next(r for r in records if r["state"] == "queued")

    def spooled(self) -> set[str]:
        return {p.name for p in self.stack.spool.iterdir()}

    def usage(self, api, token: str) -> dict:
        response = api.get("/v1/usage", headers=bearer(token))
        assert response.status_code == 200, response.text
        return response.json()

    def wait_usage(self, token: str, **expected) -> None:
        """Both apis answer *expected* in the key's usage (each once its status reader has the tasks)."""
        for api in self.apis:
            wait_until(lambda api=api: {k: self.usage(api, token)[k] for k in expected} == expected, SPREAD_S,
                       f"{api.url} to count {expected}")


@pytest.fixture(scope="module")
def deployment(broker, tmp_path_factory):
    from support import KafkaView

    stack = make_stack(broker, tmp_path_factory.mktemp("quotas"), "quotas")
    stack.spool.mkdir(parents=True, exist_ok=True)
    # Private addresses allowed: the URL tests fetch from the loopback origin.
    first, second = stack.start(workers=1, allow_private_urls=True), stack.start(workers=1, allow_private_urls=True)
    kafka = KafkaView(broker.bootstrap)
    yield Deployment(first, second, kafka)
    kafka.producer.close()
    stack.close()


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    """Two seconds of audio (its header says so)."""
    return tinymodel.write_sample(tmp_path_factory.mktemp("songs") / "song.wav", seconds=2).read_bytes()


def upload(api, token: str, *songs: bytes, headers: dict | None = None, **form) -> requests.Response:
    files = [("audio", (f"song{i}.wav", content)) for i, content in enumerate(songs)]
    return api.post("/v1/tasks", headers={**bearer(token), **(headers or {})}, files=files,
                    data={"hook_url": api.PUBLIC_HOOK, **form})


def refused_for_quota(response: requests.Response, quota: str) -> None:
    assert response.status_code == 429, response.text
    assert quota in response.json()["error"] and "nothing was queued" in response.json()["error"]
    assert int(response.headers["Retry-After"]) >= 1


def test_the_task_past_max_active_gets_429_and_nothing_is_queued(deployment, song):
    token = deployment.add_key("q-active", max_active=2)
    first, second = deployment.apis
    accepted = [upload(first, token, song), upload(second, token, song)]
    assert [r.status_code for r in accepted] == [202, 202], [r.text for r in accepted]
    deployment.wait_usage(token, active=2)

    before = deployment.spooled()
    for api in deployment.apis:
        refused_for_quota(upload(api, token, song), "max_active")
        refused_for_quota(api.post("/v1/tasks", headers=bearer(token),
                                   json={"audio": "https://93.184.215.14/a.wav", "hook_url": api.PUBLIC_HOOK}),
                          "max_active")
    assert deployment.spooled() == before  # nothing spooled, nothing kept
    assert {t["task_uuid"] for t in deployment.tasks_of("q-active")} == {r.json()["task_uuid"] for r in accepted}
    usage = deployment.usage(second, token)
    assert (usage["key"], usage["active"], usage["quota"]["max_active"]) == ("q-active", 2, 2)

    # A task that ends frees its place: the processor's final state, written as it writes it.
    done = accepted[0].json()["task_uuid"]
    deployment.kafka.send(deployment.stack.topics.status, {"task_uuid": done, "state": "succeeded",
                                                           "outcome": "succeeded", "key": "q-active"})
    deployment.wait_usage(token, active=1)
    assert upload(first, token, song).status_code == 202
    assert len(deployment.tasks_of("q-active")) == 3


def test_a_batch_that_would_cross_the_quota_is_refused_whole(deployment, song):
    token = deployment.add_key("q-batch", max_active=3)
    first, second = deployment.apis
    assert upload(first, token, song).status_code == 202
    deployment.wait_usage(token, active=1)
    before = deployment.spooled()
    refused = upload(second, token, song, song, song)
    refused_for_quota(refused, "max_active")
    assert "this request adds 3" in refused.json()["error"]
    assert deployment.spooled() == before
    assert len(deployment.tasks_of("q-batch")) == 1
    fits = upload(second, token, song, song)
    assert fits.status_code == 202, fits.text
    assert len(fits.json()["tasks"]) == 2
    assert len(deployment.tasks_of("q-batch")) == 3
    deployment.wait_usage(token, active=3)


def test_audio_seconds_per_day_counts_what_was_submitted(deployment, song):
    token = deployment.add_key("q-seconds", audio_seconds_per_day=5)
    first, second = deployment.apis
    one = upload(first, token, song)
    assert one.status_code == 202, one.text
    two = upload(second, token, song)
    assert two.status_code == 202, two.text
    # Each queued status carries the length the api read from the file's header.
    assert deployment.queued_status(one.json()["task_uuid"])["audio_seconds"] == pytest.approx(2.0)
    deployment.wait_usage(token, active=2, audio_seconds_today=4.0)

    before = deployment.spooled()
    refused = upload(first, token, song)  # 4 + 2 > 5
    refused_for_quota(refused, "audio_seconds_per_day")
    now = datetime.now(UTC)
    midnight = (datetime(now.year, now.month, now.day, tzinfo=UTC).timestamp() + 86400)
    assert int(refused.headers["Retry-After"]) <= midnight - now.timestamp() + 1
    assert deployment.spooled() == before
    queued = deployment.tasks_of("q-seconds")
    assert len(queued) == 2
    # And so does each task message: the processors' key turns count it (processor/key_turns.py).
    assert [t["audio_seconds"] for t in queued] == [pytest.approx(2.0)] * 2
    usage = deployment.usage(second, token)
    assert usage["audio_seconds_today"] == 4.0 and usage["quota"]["audio_seconds_per_day"] == 5
    assert usage["day"] == now.strftime("%Y-%m-%d")

    # An operator raises the quota on one api; the other admits the next song once it has the record.
    raised = requests.patch(f"{first.url}/v1/keys/q-seconds", headers=first.AUTH,
                            json={"audio_seconds_per_day": 6}, timeout=30)
    assert raised.status_code == 200, raised.text
    assert raised.json()["quota"] == {"max_active": None, "audio_seconds_per_day": 6}
    wait_until(lambda: deployment.usage(second, token)["quota"]["audio_seconds_per_day"] == 6, SPREAD_S,
               "the second api to know the new quota")
    assert upload(second, token, song).status_code == 202
    deployment.wait_usage(token, audio_seconds_today=6.0)


def test_usage_is_the_callers_unless_an_operator_asks(deployment):
    mine = deployment.add_key("q-usage-a")
    other = deployment.add_key("q-usage-b", max_active=7)
    api = deployment.second
    assert api.get("/v1/usage", headers=bearer(mine)).json()["quota"] == {"max_active": None,
                                                                          "audio_seconds_per_day": None}
    assert api.get("/v1/usage?key=q-usage-b", headers=bearer(mine)).status_code == 403
    as_operator = api.get("/v1/usage?key=q-usage-b", headers=api.AUTH)
    assert as_operator.status_code == 200 and as_operator.json()["quota"]["max_active"] == 7
    assert as_operator.json()["active"] == 0 and as_operator.json()["audio_seconds_today"] == 0
    assert api.get("/v1/usage?key=nobody", headers=api.AUTH).status_code == 404
    assert api.get("/v1/usage", headers=api.AUTH).json()["key"] == "config-token-1"
    assert deployment.usage(api, other)["key"] == "q-usage-b"


@pytest.fixture(scope="module")
def quota_key(deployment) -> str:
    deployment.add_key("q-patched", max_active=5)
    return "q-patched"


@pytest.mark.parametrize("bad", [0, -1, "3", 1.5, True, 10**12, [1]])
def test_a_malformed_quota_is_400_and_nothing_is_written(deployment, quota_key, bad):
    api = deployment.first
    name = f"q-bad-{uuid.uuid4().hex[:8]}"
    before = len(deployment.kafka.read_all(deployment.stack.topics.keys))
    for field in ("max_active", "audio_seconds_per_day"):
        response = api.post("/v1/keys", headers=api.AUTH, json={"name": name, "scope": "submit", field: bad})
        assert response.status_code == 400, response.text
        assert field in response.json()["error"]
        patched = requests.patch(f"{api.url}/v1/keys/{quota_key}", headers=api.AUTH, json={field: bad}, timeout=30)
        assert patched.status_code == 400, patched.text
    assert requests.patch(f"{api.url}/v1/keys/{quota_key}", headers=api.AUTH, json={"max_users": 3},
                          timeout=30).status_code == 400
    assert len(deployment.kafka.read_all(deployment.stack.topics.keys)) == before
    listed = {k["name"]: k for k in api.get("/v1/keys", headers=api.AUTH).json()["keys"]}
    assert name not in listed and listed[quota_key]["quota"]["max_active"] == 5


def uvrd_keys(api, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UVRD_")}
    return subprocess.run([sys.executable, "-m", "uvrd", "keys", *args, "--api", api.url, "--token", token],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_keys_command_sets_and_shows_quotas(deployment):
    api = deployment.second
    added = uvrd_keys(api, api.TOKEN, "add", "q-cli", "--scope", "submit", "--max-active", "4")
    assert added.returncode == 0, added.stderr
    changed = uvrd_keys(api, api.TOKEN, "set-quota", "q-cli", "--max-active", "none", "--audio-seconds-per-day", "60")
    assert changed.returncode == 0, changed.stderr
    assert "max_active unlimited, audio_seconds_per_day 60" in changed.stdout
    shown = uvrd_keys(api, api.TOKEN, "usage", "q-cli")
    assert shown.returncode == 0 and "0 tasks queued or running" in shown.stdout
    assert uvrd_keys(api, api.TOKEN, "set-quota", "q-cli", "--max-active", "0").returncode == 2


# -- Idempotency-Key -----------------------------------------------------------------------------------------


def test_the_same_post_twice_makes_one_task(deployment, song):
    token = deployment.add_key("i-twice")
    first, second = deployment.apis
    headers = {"Idempotency-Key": "order-1"}
    made = upload(first, token, song, headers=headers)
    assert made.status_code == 202, made.text
    task_uuid = made.json()["task_uuid"]
    for api in (first, second, first):
        again = upload(api, token, song, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["task_uuid"] == task_uuid
        assert again.headers["Location"] == f"{api.url}/v1/tasks/{task_uuid}"
    assert [t["task_uuid"] for t in deployment.tasks_of("i-twice")] == [task_uuid]

    # Another key's same header is its own.
    other = deployment.add_key("i-twice-other")
    theirs = upload(second, other, song, headers=headers)
    assert theirs.status_code == 202 and theirs.json()["task_uuid"] != task_uuid


def test_the_same_key_with_another_body_is_422_and_queues_nothing(deployment, song):
    token = deployment.add_key("i-differs")
    headers = {"Idempotency-Key": "order-2"}
    assert upload(deployment.first, token, song, headers=headers).status_code == 202
    before = deployment.spooled()
    for api in deployment.apis:
        for changed in (upload(api, token, song, headers=headers, priority="4"),
                        upload(api, token, song + b"\0\0", headers=headers),
                        upload(api, token, song, song, headers=headers)):
            assert changed.status_code == 422, changed.text
            assert "Idempotency-Key" in changed.json()["error"]
    assert deployment.spooled() == before
    assert len(deployment.tasks_of("i-differs")) == 1


def test_a_batch_repeated_answers_its_tasks(deployment, song):
    token = deployment.add_key("i-batch")
    headers = {"Idempotency-Key": "batch-1"}
    made = upload(deployment.first, token, song, song, headers=headers)
    assert made.status_code == 202, made.text
    again = upload(deployment.second, token, song, song, headers=headers)
    assert again.status_code == 200, again.text
    assert [t["task_uuid"] for t in again.json()["tasks"]] == [t["task_uuid"] for t in made.json()["tasks"]]
    assert [t["filename"] for t in again.json()["tasks"]] == ["song0.wav", "song1.wav"]
    assert len(deployment.tasks_of("i-batch")) == 2


def test_the_same_post_at_once_on_two_apis_makes_one_task(deployment, song):
    token = deployment.add_key("i-at-once")
    headers = {"Idempotency-Key": "order-at-once"}
    start = threading.Barrier(6)
    answers: list[requests.Response] = []

    def submit(api):
        start.wait(30)
        answers.append(upload(api, token, song, headers=headers))

    threads = [threading.Thread(target=submit, args=(deployment.apis[i % 2],)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 6
    assert {r.status_code for r in answers} <= {200, 202, 409}, [r.text for r in answers]
    assert [r.status_code for r in answers].count(202) == 1  # the one that made it; the rest: 200 or 409
    tasks = deployment.tasks_of("i-at-once")
    assert len(tasks) == 1, tasks
    told = {r.json()["task_uuid"] for r in answers if r.status_code in (200, 202)}
    assert told <= {tasks[0]["task_uuid"]}
    # Whoever was fenced gets the one task by asking again.
    again = upload(deployment.second, token, song, headers=headers)
    assert again.status_code == 200 and again.json()["task_uuid"] == tasks[0]["task_uuid"]


def test_a_url_submission_repeated_is_answered_and_counted_once(deployment, song, origin):
    token = deployment.add_key("i-url", audio_seconds_per_day=3)
    url = origin.serve(song)
    body = {"audio": url, "hook_url": deployment.first.PUBLIC_HOOK}
    headers = {**bearer(token), "Idempotency-Key": "url-1"}
    made = deployment.first.post("/v1/tasks", headers=headers, json=body)
    assert made.status_code == 202, made.text
    fetched = len(origin.hits)
    again = deployment.second.post("/v1/tasks", headers=headers, json=body)
    assert again.status_code == 200 and again.json()["task_uuid"] == made.json()["task_uuid"]
    assert len(origin.hits) == fetched  # a repeat fetches nothing
    other = deployment.second.post("/v1/tasks", headers=headers, json={**body, "priority": 5})
    assert other.status_code == 422, other.text
    assert len(deployment.tasks_of("i-url")) == 1
    deployment.wait_usage(token, active=1, audio_seconds_today=2.0)
    # A new submission would pass the day's 3 s: refused once its length is known, and nothing kept.
    before = deployment.spooled()
    refused_for_quota(deployment.first.post("/v1/tasks", headers=bearer(token), json=body), "audio_seconds_per_day")
    assert deployment.spooled() == before and len(deployment.tasks_of("i-url")) == 1


@pytest.fixture(scope="module")
def plain_key(deployment) -> str:
    return deployment.add_key("i-plain")


@pytest.mark.parametrize("value", ["", "a" * 256, "caf\xe9", "tab\there"])
def test_a_malformed_idempotency_key_is_400(deployment, plain_key, song, value):
    token = plain_key
    response = upload(deployment.first, token, song, headers={"Idempotency-Key": value})
    assert response.status_code == 400, response.text
    assert "Idempotency-Key" in response.json()["error"]
    assert deployment.tasks_of("i-plain") == []
