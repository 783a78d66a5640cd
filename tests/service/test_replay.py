"""A dead letter replayed: a failed task runs again, an undelivered result is delivered again, each
exactly once, through ``POST /v1/dead-letters/<partition>/<offset>/replay`` and ``uvrd dead-letters
replay`` (uvrd/boards/replays.py), with a real broker, the tiny model and the daemons as subprocesses.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest
import requests
from scrape import scrape
from separation_service import AUTH, TOKEN, SeparationService, submit
from support import wait_until

from devtools import tinymodel

pytestmark = pytest.mark.slow


get = SeparationService.get  # get(service, path)


def replay(svc, letter: dict) -> requests.Response:
    return requests.post(f"{svc.url}/v1/dead-letters/{letter['partition']}/{letter['offset']}/replay",
                         headers=AUTH, timeout=60)


def webhooks_of(svc, task_uuid: str) -> list[dict]:
    return [r for r in svc.receiver.requests if json.loads(r["body"]).get("task_uuid") == task_uuid]


def letter_of(svc, task_uuid: str, stage: str) -> dict:
    return wait_until(lambda: [e for e in get(svc, f"/v1/dead-letters?task_uuid={task_uuid}")["dead_letters"]
                               if e["stage"] == stage], 60, f"the {stage} dead letter of {task_uuid}")[0]


def settled(svc) -> None:
    """Every task and result committed: nothing more can reach the receiver."""
    wait_until(lambda: (q := get(svc, "/v1/queues"))["results"]["backlog"] == 0
               and all(t["backlog"] == 0 for t in q["tasks"]), 60, "the queues to drain")


def test_a_failed_task_replayed_once_its_input_is_there_runs_again_and_is_delivered_once(service, kafka, tmp_path):
    svc, stack = service, service.stack
    before = {name: scrape(listen) for name, listen in svc.metrics.items()}
    late = stack.spool / "late-input.wav"  # not there yet: the task fails
    task = stack.task(late, hook_url=svc.receiver.url)
    kafka.send(stack.tasks, task)
    uuid = task["task_uuid"]
    [failure] = wait_until(lambda: webhooks_of(svc, uuid), 60, "the failure webhook")
    assert json.loads(failure["body"])["status"] == "failed" and failure["headers"]["Idempotency-Key"] == uuid
    letter = letter_of(svc, uuid, "processor")
    assert "does not exist" in letter["error"]

    tinymodel.write_sample(late, seconds=2)
    # Two operators at once: one replay, and the other is told it was replayed.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: replay(svc, letter), range(2)))
    codes = sorted(a.status_code for a in answers)
    print("\nconcurrent replays answered", codes)
    assert codes in ([202, 409], [202, 503]), [a.text for a in answers]
    body = next(a for a in answers if a.status_code == 202).json()
    assert body == {"task_uuid": uuid, "replay": 1, "requeued_to": stack.tasks, "stage": "processor",
                    "status_url": f"/v1/tasks/{uuid}"}

    success = wait_until(lambda: [w for w in webhooks_of(svc, uuid) if json.loads(w["body"])["status"] == "success"],
                         120, "the replay's webhook")[0]
    assert success["headers"]["Idempotency-Key"] == f"{uuid}/replay-1"
    assert json.loads(success["body"])["replay"] == 1
    status = wait_until(lambda: (s := get(svc, f"/v1/tasks/{uuid}"))["state"] == "delivered" and s, 30,
                        "the status of the replay")
    assert status["replay"] == 1 and "error_message" not in status, status

    again = replay(svc, letter)
    assert again.status_code == 409 and "replayed already" in again.json()["error"], again.text
    env = {**os.environ, "UVRD_API_URL": svc.url, "UVRD_API_TOKEN": TOKEN}
    cli = subprocess.run([sys.executable, "-m", "uvrd", "dead-letters", "replay", uuid], capture_output=True,
                         text=True, env=env, timeout=120)
    assert cli.returncode == 0 and "replayed already" in cli.stdout, cli.stdout + cli.stderr
    settled(svc)
    assert [json.loads(w["body"])["status"] for w in webhooks_of(svc, uuid)] == ["failed", "success"]
    assert len(get(svc, f"/v1/dead-letters?task_uuid={uuid}")["dead_letters"]) == 1
    # What Prometheus is told: one refusal and its dead letter, one success, one replay; the rest refused.
    after = {name: scrape(listen) for name, listen in svc.metrics.items()}

    def grew(daemon: str, name: str, **labels) -> float:
        return after[daemon].value(name, **labels) - before[daemon].value(name, **labels)
    assert grew("processor", "uvrd_tasks_total", outcome="refused", reason="bad_input_ref") == 1
    assert grew("processor", "uvrd_tasks_total", outcome="succeeded") == 1
    assert grew("processor", "uvrd_dead_letters_total", stage="processor") == 1
    assert grew("api", "uvrd_dead_letter_replays_total", answer="replayed", stage="processor") == 1
    assert grew("api", "uvrd_dead_letter_replays_total", answer="already") == 2 + codes.count(409)
    assert grew("api", "uvrd_dead_letter_replays_total", answer="unconfirmed") == codes.count(503)


def test_an_undelivered_result_replayed_once_the_receiver_is_back_is_delivered_once(service, tmp_path):
    svc = service
    sample = tinymodel.write_sample(tmp_path / "song.wav", seconds=2)
    svc.receiver.script = [500] * 8  # the uploader's 8 attempts, each refused
    uuid = submit(svc.url, sample, svc.receiver.url)
    letter = letter_of(svc, uuid, "uploader")
    assert len(webhooks_of(svc, uuid)) == 8 and svc.receiver.script == []
    assert wait_until(lambda: get(svc, f"/v1/tasks/{uuid}")["state"] == "delivery_failed", 30, "delivery_failed")

    env = {**os.environ, "UVRD_API_URL": svc.url, "UVRD_API_TOKEN": TOKEN}
    cli = subprocess.run([sys.executable, "-m", "uvrd", "dead-letters", "replay", "--task", uuid],
                         capture_output=True, text=True, env=env, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert f"replayed task {uuid} (replay 1)" in cli.stdout and "1 of 1 dead letters" in cli.stdout, cli.stdout

    delivered = wait_until(lambda: [w for w in webhooks_of(svc, uuid) if w["status"] == 200], 60,
                           "the replayed result's webhook")
    assert delivered[0]["headers"]["Idempotency-Key"] == f"{uuid}/replay-1"
    body = json.loads(delivered[0]["body"])
    assert body["status"] == "success" and body["replay"] == 1 and set(body["stems"]) == {"vocals", "instrumental"}
    status = wait_until(lambda: (s := get(svc, f"/v1/tasks/{uuid}"))["state"] == "delivered" and s, 30,
                        "the status of the replay")
    assert status["replay"] == 1 and status["stems"], status
    assert replay(svc, letter).status_code == 409
    settled(svc)
    assert len([w for w in webhooks_of(svc, uuid) if w["status"] == 200]) == 1


def test_a_replay_of_nothing_or_without_a_token_is_refused(service):
    svc = service
    assert requests.post(f"{svc.url}/v1/dead-letters/0/999999/replay", headers=AUTH, timeout=30).status_code == 404
    assert requests.post(f"{svc.url}/v1/dead-letters/0/0/replay", timeout=30).status_code == 401
