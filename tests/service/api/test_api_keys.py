"""Named API keys and their scopes, on a real broker with two ``uvrd api`` of one deployment (each
one worker, so that an answer from an api is its only worker's): two submit keys, A and B, and an
operator key.

B cannot read, download, cancel, list or learn the existence of A's task on any route: each
answers exactly as it does for a task that does not exist.  The operator sees and does everything.
A revoked key is refused by both apis within 5 s.  Refused additions write nothing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
import requests

from api_stacks import make_stack
from support import bearer, wait_until
from uvrd.keys.record import KDF
from devtools import tinymodel

# How long a key's addition or revocation may take to reach every api: the promise.
SPREAD_S = 5.0



class Deployment:
    def __init__(self, first, second, kafka):
        self.first, self.second, self.kafka = first, second, kafka
        self.apis = (first, second)
        self.stack = first.stack

    def add_key(self, name: str, scope: str) -> str:
        """A new key's token, once both apis take it."""
        response = self.first.post("/v1/keys", headers=self.first.AUTH, json={"name": name, "scope": scope})
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["name"], body["scope"]) == (name, scope) and body["revoked_at"] is None
        assert response.headers["Cache-Control"] == "no-store"
        for api in self.apis:
            wait_until(lambda api=api: api.get("/v1/whoami", headers=bearer(body["token"])).status_code == 200,
                       SPREAD_S, f"{api.url} to know the key {name}")
        return body["token"]

    def key_records(self) -> list:
        return self.kafka.read_all(self.stack.topics.keys)


@pytest.fixture(scope="module")
def deployment(broker, tmp_path_factory):
    from support import KafkaView

    stack = make_stack(broker, tmp_path_factory.mktemp("keys"), "keys")
    first, second = stack.start(workers=1), stack.start(workers=1)
    kafka = KafkaView(broker.bootstrap)
    yield Deployment(first, second, kafka)
    kafka.producer.close()
    stack.close()


@pytest.fixture(scope="module")
def tokens(deployment) -> dict[str, str]:
    return {"a": deployment.add_key("team-a", "submit"), "b": deployment.add_key("team-b", "submit"),
            "ops": deployment.add_key("ops", "operator")}


def finished_task(deployment, owner: str | None) -> str:
    """A task of *owner* that the processor reports succeeded, with two stem files."""
    task_uuid = str(uuid.uuid4())
    directory = deployment.stack.output / task_uuid
    directory.mkdir()
    stems = {}
    for name in ("vocals", "instrumental"):
        stems[name] = str(tinymodel.write_sample(directory / f"{name}.wav", 0.2, seed=len(name)))
    deployment.kafka.send(deployment.stack.topics.status, {
        "task_uuid": task_uuid, "state": "succeeded", "outcome": "succeeded", "stems": stems,
        "submitted_at": "2026-12-01T00:00:00.000+00:00", **({"key": owner} if owner else {})})
    return task_uuid


def answer(response: requests.Response, task_uuid: str) -> tuple:
    """What a client can learn from an answer about a task: status, type and body, the uuid masked."""
    return response.status_code, response.headers.get("Content-Type"), response.text.replace(task_uuid, "<uuid>")


def test_a_submit_key_cannot_reach_another_keys_task_on_any_route(deployment, tokens, sample):
    a, b, ops = bearer(tokens["a"]), bearer(tokens["b"]), bearer(tokens["ops"])
    first, second = deployment.apis
    queued = first.upload(sample, headers=a)
    assert queued.status_code == 202, queued.text
    mine = queued.json()["task_uuid"]
    done = finished_task(deployment, "team-a")
    for api in deployment.apis:
        for task_uuid in (mine, done):
            wait_until(lambda api=api, t=task_uuid: api.get(f"/v1/tasks/{t}", headers=a).status_code == 200,
                       SPREAD_S, f"{api.url} to show A its task")

    for api in deployment.apis:
        for task_uuid in (mine, done):
            unknown = str(uuid.uuid4())
            calls = {
                "read": lambda t: api.get(f"/v1/tasks/{t}", headers=b),
                "download": lambda t: api.get(f"/v1/tasks/{t}/stems/vocals", headers=b),
                "cancel": lambda t: requests.delete(f"{api.url}/v1/tasks/{t}", headers=b, timeout=30),
            }
            for what, call in calls.items():
                theirs, nothing = call(task_uuid), call(unknown)
                assert theirs.status_code == 404, (what, theirs.text)
                assert answer(theirs, task_uuid) == answer(nothing, unknown), what
        listed = api.get("/v1/tasks", headers=b).json()
        assert listed == {"tasks": [], "next": None}
    # B's cancel recorded nothing: A's task is still not cancelled.
    assert "cancel_requested_at" not in first.get(f"/v1/tasks/{mine}", headers=a).json()

    # A reads, lists and downloads its own; the signed links work with no key at all.
    body = second.get(f"/v1/tasks/{done}", headers=a).json()
    assert body["key"] == "team-a" and set(body["stems"]) == {"vocals", "instrumental"}
    assert requests.get(body["stems"]["vocals"], timeout=30).status_code == 200
    assert second.get(f"/v1/tasks/{done}/stems/vocals", headers=a).status_code == 200
    assert {t["task_uuid"] for t in first.get("/v1/tasks", headers=a).json()["tasks"]} == {mine, done}
    assert first.get(f"/v1/tasks/{mine}", headers=a).json()["filename"] == "upload.bin"

    # The operator sees and does everything: A's tasks, B's (none), a task no key submitted.
    nobody = finished_task(deployment, None)
    wait_until(lambda: second.get(f"/v1/tasks/{nobody}", headers=ops).status_code == 200, SPREAD_S,
               "the operator to see the task no key submitted")
    assert {mine, done, nobody} <= {t["task_uuid"] for t in second.get("/v1/tasks", headers=ops).json()["tasks"]}
    only_a = second.get("/v1/tasks", headers=ops, params={"key": "team-a"}).json()["tasks"]
    assert {t["task_uuid"] for t in only_a} == {mine, done}
    assert second.get("/v1/tasks", headers=b, params={"key": "team-a"}).json()["tasks"] == []
    assert second.get(f"/v1/tasks/{done}/stems/vocals", headers=ops).status_code == 200
    assert a_cannot_see(first, a, nobody)
    cancelled = requests.delete(f"{second.url}/v1/tasks/{mine}", headers=ops, timeout=30)
    assert cancelled.status_code == 202, cancelled.text

    # The task message, its status and the journal line of its request name the key.
    [task] = deployment.stack.records(deployment.kafka, deployment.stack.topics.tasks, mine)
    assert task["key"] == "team-a"
    [status] = deployment.stack.records(deployment.kafka, deployment.stack.topics.status, mine)
    assert status["key"] == "team-a" and status["state"] == "queued"
    lines = [e for e in first.daemon.log_events() if e.get("event") == "request" and e.get("path") == "/v1/tasks"
             and e.get("method") == "POST" and e.get("status") == 202]
    assert lines and lines[-1]["key"] == "team-a"


def a_cannot_see(api, headers, task_uuid: str) -> bool:
    return api.get(f"/v1/tasks/{task_uuid}", headers=headers).status_code == 404


def test_the_fleet_dead_letters_and_keys_answer_403_to_a_submit_key_and_200_to_an_operator(deployment, tokens):
    a, ops = bearer(tokens["a"]), bearer(tokens["ops"])
    api = deployment.second
    reads = ["/v1/workers", "/v1/queues", "/v1/dead-letters", "/v1/dead-letters/0/0", "/v1/keys"]
    for path in reads:
        refused = api.get(path, headers=a)
        assert refused.status_code == 403 and "operator key" in refused.json()["error"], (path, refused.text)
    assert api.post("/v1/dead-letters/0/0/replay", headers=a).status_code == 403
    assert api.post("/v1/keys", headers=a, json={"name": "sneaky", "scope": "operator"}).status_code == 403
    assert requests.delete(f"{api.url}/v1/keys/team-b", headers=a, timeout=30).status_code == 403
    for path in ("/v1/workers", "/v1/queues", "/v1/dead-letters", "/v1/keys"):
        assert api.get(path, headers=ops).status_code == 200, path
    # Any key sees the models a task may name, and itself.
    assert api.get("/v1/models", headers=a).status_code == 200
    assert api.get("/v1/whoami", headers=a).json() == {"name": "team-a", "scope": "submit"}
    assert api.get("/v1/whoami", headers=api.AUTH).json() == {"name": "config-token-1", "scope": "operator"}


def test_a_key_list_holds_no_secret_and_a_list_of_tasks_comes_in_pages(deployment, tokens):
    ops = bearer(tokens["ops"])
    listed = deployment.first.get("/v1/keys", headers=ops).json()["keys"]
    names = {k["name"]: k for k in listed}
    assert names["config-token-1"] == {"name": "config-token-1", "scope": "operator", "configured": True}
    assert names["team-a"]["scope"] == "submit" and names["ops"]["scope"] == "operator"
    text = deployment.first.get("/v1/keys", headers=ops).text
    assert tokens["a"].split("~")[1] not in text and "digest" not in text and "salt" not in text

    pager = deployment.add_key("pager", "submit")
    submitted = []
    for i in range(5):
        task_uuid = str(uuid.uuid4())
        deployment.kafka.send(deployment.stack.topics.status, {
            "task_uuid": task_uuid, "state": "queued", "key": "pager",
            "submitted_at": f"2026-12-0{i + 1}T00:00:00.000+00:00"})
        submitted.append(task_uuid)
    api = deployment.second
    wait_until(lambda: len(api.get("/v1/tasks", headers=bearer(pager)).json()["tasks"]) == 5, SPREAD_S,
               "the five tasks")
    pages, cursor = [], None
    while True:
        body = api.get("/v1/tasks", headers=bearer(pager), params={"limit": 2, **({"before": cursor} if cursor else {})}).json()
        pages.append([t["task_uuid"] for t in body["tasks"]])
        cursor = body["next"]
        if cursor is None:
            break
    newest_first = submitted[::-1]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    for bad in ({"limit": 0}, {"limit": "x"}, {"limit": 201}, {"before": "not-a-cursor"}):
        assert api.get("/v1/tasks", headers=bearer(pager), params=bad).status_code == 400, bad


def test_a_revoked_key_is_refused_by_every_api_within_five_seconds(deployment, tokens):
    ops = bearer(tokens["ops"])
    token = deployment.add_key("leaving", "submit")
    revoked_at = time.monotonic()
    response = requests.delete(f"{deployment.first.url}/v1/keys/leaving", headers=ops, timeout=30)
    assert response.status_code == 200 and response.json()["revoked_at"], response.text
    seen = {}
    for api in deployment.apis:
        wait_until(lambda api=api: api.get("/v1/whoami", headers=bearer(token)).status_code == 401,
                   SPREAD_S, f"{api.url} to refuse the revoked key")
        seen[api.url] = round(time.monotonic() - revoked_at, 3)
    print("\nrevocation refused by each api after (s):", seen)
    for api in deployment.apis:  # refused on every route, not only the one polled
        for path in ("/v1/tasks", "/v1/models"):
            assert api.get(path, headers=bearer(token)).status_code == 401
        assert api.upload(tinymodel_bytes(), headers=bearer(token)).status_code == 401
    # Revoking again answers the same; the name is never given out again.
    again = requests.delete(f"{deployment.second.url}/v1/keys/leaving", headers=ops, timeout=30)
    assert again.status_code == 200 and again.json()["revoked_at"] == response.json()["revoked_at"]
    refused = deployment.second.post("/v1/keys", headers=ops, json={"name": "leaving", "scope": "submit"})
    assert refused.status_code == 409 and "revoked" in refused.json()["error"]
    listed = {k["name"]: k for k in deployment.second.get("/v1/keys", headers=ops).json()["keys"]}
    assert listed["leaving"]["revoked_at"] == response.json()["revoked_at"]


def tinymodel_bytes() -> bytes:
    return b"RIFF" + b"\0" * 64


@pytest.mark.parametrize("body, status, words", [
    ({"name": "team-a", "scope": "submit"}, 409, "exists"),
    ({"name": "", "scope": "submit"}, 400, "1-64"),
    ({"name": "x" * 65, "scope": "submit"}, 400, "1-64"),
    ({"name": "has space", "scope": "submit"}, 400, "1-64"),
    ({"name": "tilde~", "scope": "submit"}, 400, "1-64"),
    ({"name": "config-token-9", "scope": "operator"}, 400, "api.tokens"),
    ({"name": "fine", "scope": "admin"}, 400, "submit, operator"),
    ({"name": "fine"}, 400, "submit, operator"),
    ({"scope": "submit"}, 400, "1-64"),
])
def test_a_refused_addition_says_why_and_writes_nothing(deployment, tokens, body, status, words):
    before = len(deployment.key_records())
    response = deployment.first.post("/v1/keys", headers=bearer(tokens["ops"]), json=body)
    assert response.status_code == status and words in response.json()["error"], response.text
    assert len(deployment.key_records()) == before


def test_revoking_what_is_no_named_key_is_refused(deployment, tokens):
    ops = bearer(tokens["ops"])
    api = deployment.first
    assert requests.delete(f"{api.url}/v1/keys/nobody", headers=ops, timeout=30).status_code == 404
    assert requests.delete(f"{api.url}/v1/keys/config-token-1", headers=ops, timeout=30).status_code == 409
    assert api.get("/v1/whoami", headers=api.AUTH).status_code == 200


def test_keys_are_stored_as_salted_hashes_only(deployment, tokens):
    for rec in deployment.key_records():
        text = rec.value.decode()
        assert all(token.split("~")[1] not in text for token in tokens.values())
        assert KDF in text or "revoked_at" in text


def uvrd_keys(api, token: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UVRD_")}
    return subprocess.run([sys.executable, "-m", "uvrd", "keys", *args, "--api", api.url, "--token", token],
                          capture_output=True, text=True, env=env, timeout=120)


def test_the_keys_command_adds_lists_and_revokes(deployment, tokens):
    api = deployment.second
    added = uvrd_keys(api, api.TOKEN, "add", "from-cli", "--scope", "submit")
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()  # the token alone on stdout, for a script to keep
    assert "shown only this once" in added.stderr
    assert api.get("/v1/whoami", headers=bearer(token)).json() == {"name": "from-cli", "scope": "submit"}

    again = uvrd_keys(api, api.TOKEN, "add", "from-cli", "--scope", "operator")
    assert again.returncode == 1 and "exists" in again.stderr
    # A submit key may not manage keys: the API's 403 is the command's exit status 2.
    assert uvrd_keys(api, token, "list").returncode == 2

    listed = uvrd_keys(api, api.TOKEN, "list")
    assert listed.returncode == 0
    assert any(line.split()[:2] == ["from-cli", "submit"] for line in listed.stdout.splitlines())
    assert token.split("~")[1] not in listed.stdout

    revoked = uvrd_keys(api, tokens["ops"], "revoke", "from-cli")
    assert revoked.returncode == 0 and "revoked at" in revoked.stdout
    wait_until(lambda: api.get("/v1/whoami", headers=bearer(token)).status_code == 401, SPREAD_S,
               "the revoked key to be refused")
    assert uvrd_keys(api, api.TOKEN, "revoke", "no-such-key").returncode == 1
