"""Progress and cancellation as a user meets them: ``uvrd api``, ``processor`` and ``uploader`` on a
real broker with the tiny model, tasks submitted over HTTP (and with ``uvrd submit`` / ``uvrd
cancel``), the outcome read from outside: the webhooks, the results and status topics, the
processor's log.  The run a stop interrupts has its daemons in the test process and a scripted engine:
what it checks is the events around the stop, not the model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
import scripted_engine
from separation_service import AUTH, TOKEN, WEBHOOK_SECRET, SeparationService, submit
from support import WebhookReceiver, wait_until

from devtools import tinymodel
from uvrd.processor import long_audio, progress_meter
from uvrd.processor.daemon import Processor
from uvrd.uploader.daemon import Uploader
from uvrd.uploader import webhook

pytestmark = pytest.mark.slow

# Long enough that a cancellation lands while it separates, and a few progress reports fall inside
# (about 8 s per 150 s of audio on CI's CPU).
LONG_S = 600
# Chunks short enough that a minute and a quarter of audio is separated in two parts: progress across
# parts is seen without separating ten minutes.
CHUNKING = long_audio.Chunking(seconds=40, overlap=5)
TWO_PARTS_S = 75


@pytest.fixture(scope="module")
def service(module_stack, model_dir):
    svc = SeparationService(module_stack, [tinymodel.install(model_dir)], model_dir, progress_interval=0.3,
                            chunk_seconds=CHUNKING.seconds,
                            chunk_overlap_seconds=CHUNKING.overlap)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def long_input(tmp_path_factory):
    return tinymodel.write_sample(tmp_path_factory.mktemp("cancel") / "long.wav", seconds=LONG_S)


def webhooks(service, task_uuid: str) -> list[dict]:
    return [json.loads(d["body"]) for d in service.receiver.successes()
            if json.loads(d["body"])["task_uuid"] == task_uuid]


def one_webhook(service, task_uuid: str, timeout: float = 120) -> dict:
    wait_until(lambda: webhooks(service, task_uuid), timeout, f"the webhook of {task_uuid}", interval=0.1)
    return webhooks(service, task_uuid)[0]


def task_status(service, task_uuid: str) -> dict:
    response = requests.get(f"{service.url}/v1/tasks/{task_uuid}", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def cancel(service, task_uuid: str) -> requests.Response:
    return requests.delete(f"{service.url}/v1/tasks/{task_uuid}", headers=AUTH, timeout=30)


def cli(service, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "UVRD_API_URL": service.url, "UVRD_API_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "uvrd", *args], capture_output=True, text=True, env=env, timeout=600)


def results_of(kafka, service, task_uuid: str) -> list[dict]:
    return [r for r in kafka.results(service.stack.results) if r.get("task_uuid") == task_uuid]


def statuses_of(kafka, service, task_uuid: str) -> list[dict]:
    """The task's status records in the order they were written: its state's and its progress's
    (a key of their own), without the tombstones."""
    return [v for r in kafka.read_all(service.stack.status) if r.value is not None
            and (v := json.loads(r.value))["task_uuid"] == task_uuid]


def engine_starts(service) -> int:
    return len(service.processor.events("engine starting"))


def test_progress_only_moves_forward_reaches_one_and_submit_wait_draws_it(service, kafka, tmp_path):
    audio = tinymodel.write_sample(tmp_path / "two-parts.wav", seconds=TWO_PARTS_S)
    run = cli(service, "submit", str(audio), "--wait")
    assert run.returncode == 0, run.stderr
    task_uuid = run.stdout.split()[1]
    # Not a terminal: a line for each tenth passed, in order.
    # The input is separated in two chunks: the step says which part runs.
    shown = [int(line.split("%")[0]) for line in run.stdout.splitlines() if f"with {tinymodel.TINY_MODEL}" in line
             and "%" in line]
    assert any(f"with {tinymodel.TINY_MODEL}, part 2 of 2" in line for line in run.stdout.splitlines()), run.stdout
    assert len(shown) >= 3 and shown == sorted(shown), run.stdout
    progress = [s["progress"] for s in statuses_of(kafka, service, task_uuid) if "progress" in s]
    assert progress == sorted(progress), progress
    assert progress[0] == 0.0 and progress[-1] == 1.0 and len(set(progress)) >= 4, progress
    final = task_status(service, task_uuid)
    assert (final["outcome"], final["progress"]) == ("succeeded", 1.0)


def test_a_running_and_a_queued_task_are_cancelled_once_and_the_engine_stays_loaded(service, kafka, long_input,
                                                                                    tmp_path):
    starts = engine_starts(service)
    running = submit(service.url, long_input, service.receiver.url)
    queued = submit(service.url, tinymodel.write_sample(tmp_path / "short.wav", seconds=2), service.receiver.url)
    wait_until(lambda: task_status(service, running).get("progress", 0) > 0, 120, "the long task's progress")

    asked = cancel(service, queued)
    assert asked.status_code == 202 and asked.json()["state"] == "queued", asked.text
    by_cli = cli(service, "cancel", running)
    assert by_cli.returncode == 0 and "cancellation requested" in by_cli.stdout, by_cli.stderr
    # Asking again is safe: the same request, or, if the job stopped and its task ended in between (the
    # CLI's start-up is seconds on a loaded host), the answer for a task that ended cancelled.
    again = cancel(service, running)
    assert again.status_code == 202 or (again.status_code == 409 and
                                        "already ended (cancelled)" in again.json()["error"]), again.text

    hook = one_webhook(service, running, timeout=300)
    assert hook["status"] == "cancelled" and hook["stems"] == {}, hook
    assert one_webhook(service, queued)["status"] == "cancelled"
    # Stopped in the middle of its separation: its progress never reached the last turn of its last
    # part's loop (how soon it stops is a figure of `make bench`'s, not a bound here).
    parts = CHUNKING.count(LONG_S * 44100, 44100)
    last_turn = (parts - 1 + progress_meter.LOOP_END) / parts
    progress = [s["progress"] for s in statuses_of(kafka, service, running) if "progress" in s]
    assert progress and max(progress) < last_turn, progress

    # The child stopped the job itself: no engine was killed or started for it...
    assert engine_starts(service) == starts
    assert service.processor.events("separation cancelled")
    # ...and the next task runs on it at once.
    after = service.separate(tinymodel.write_sample(tmp_path / "after.wav", seconds=2), timeout=60)
    assert after.webhook["status"] == "success" and engine_starts(service) == starts

    for task_uuid in (running, queued):
        [result] = results_of(kafka, service, task_uuid)
        assert (result["success"], result["cancelled"]) == (False, True)
        assert len(webhooks(service, task_uuid)) == 1
        final = wait_until(lambda: (s := task_status(service, task_uuid))["state"] == "delivered" and s, 30,
                           "the delivered state")
        assert final["outcome"] == "cancelled" and final["cancel_requested_at"]
        ended = cancel(service, task_uuid)
        assert ended.status_code == 409 and "already ended (cancelled)" in ended.json()["error"]
    dead = [r for r in kafka.read_all(service.stack.dead_letter) if r.key in (running.encode(), queued.encode())]
    assert dead == [], "a cancellation is no failure"


def test_cancellations_racing_the_end_of_their_tasks_end_each_task_once(service, kafka, tmp_path):
    audio = [tinymodel.write_sample(tmp_path / f"r{i}.wav", seconds=1 + i) for i in range(6)]
    tasks = [submit(service.url, a, service.receiver.url) for a in audio]
    answers: dict[str, int] = {}

    def cancel_later(task_uuid: str, delay: float):
        time.sleep(delay)  # spreads the requests over the tasks' lives: some before, some during, some after
        answers[task_uuid] = cancel(service, task_uuid).status_code

    threads = [threading.Thread(target=cancel_later, args=(t, 0.4 * i)) for i, t in enumerate(tasks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = {}
    for task_uuid in tasks:
        hook = one_webhook(service, task_uuid)
        # The webhook shows the result committed; a fresh reader of the topic may still stop short of it
        # (seen once in about twenty runs: no result read right after its webhook), so it looks until one is.
        [result] = wait_until(lambda: results_of(kafka, service, task_uuid), 30, f"the result of {task_uuid}")
        assert len(webhooks(service, task_uuid)) == 1
        outcomes[task_uuid] = hook["status"]
        assert hook["status"] == ("cancelled" if result.get("cancelled") else "success")
        assert answers[task_uuid] in (202, 409)
        if answers[task_uuid] == 409:
            assert hook["status"] == "success", "a task that had ended cannot be cancelled"
    print(f"\nracing cancellations: {sorted(outcomes.values())}")


def test_a_cancellation_recorded_while_no_processor_runs_holds_when_one_starts(service, kafka, tmp_path):
    # A clean stop: a killed processor could leave a transaction open on the results topic, which holds
    # back every read_committed reader (the other tests of this module) until it times out.
    service.processor.signal(signal.SIGTERM)
    assert service.processor.wait_exit(60) == 0
    task_uuid = submit(service.url, tinymodel.write_sample(tmp_path / "later.wav", seconds=2), service.receiver.url)
    assert cancel(service, task_uuid).status_code == 202
    service.processor = service.stack.start("processor", config=service.config, env=service.processor_env)
    service.processor.wait_ready(300)
    assert one_webhook(service, task_uuid)["status"] == "cancelled"
    [result] = results_of(kafka, service, task_uuid)
    assert result["cancelled"] is True


def test_cancelling_an_unknown_task_is_a_404_and_the_cli_says_so(service):
    assert cancel(service, "no-such-task").status_code == 404
    run = cli(service, "cancel", "no-such-task")
    assert run.returncode == 1 and "no task no-such-task" in run.stderr


EVENT = "X-Uvrd-Event"


def posts(receiver, task_uuid: str) -> list[dict]:
    """Every webhook POST for the task that was answered 2xx: its events and its final delivery."""
    return [d for d in receiver.successes() if json.loads(d["body"])["task_uuid"] == task_uuid]


def kinds(receiver, task_uuid: str) -> list[str]:
    return [d["headers"].get(EVENT) for d in posts(receiver, task_uuid)]


def test_a_task_that_opts_into_events_gets_them_signed_in_order_and_one_final_delivery(service, tmp_path):
    # The first progress report of a run is an event at once, so a short input has one; events are best
    # effort and may come after the final delivery: the wait is for both.
    audio = tinymodel.write_sample(tmp_path / "events.wav", seconds=30)
    task_uuid = submit(service.url, audio, service.receiver.url, events="started,progress")
    wait_until(lambda: {"final", "progress"} <= set(kinds(service.receiver, task_uuid)), 300,
               "the final delivery and a progress event", interval=0.1)
    got = posts(service.receiver, task_uuid)
    assert all(webhook.verify(WEBHOOK_SECRET, d["headers"][webhook.SIGNATURE_HEADER], d["body"]) for d in got)
    seen = kinds(service.receiver, task_uuid)
    assert seen[0] == "started" and seen.count("started") == 1 and seen.count("final") == 1, seen
    assert set(seen) == {"started", "progress", "final"}, "only what the task opted into"
    started = json.loads(got[0]["body"])
    assert started["attempt"] == 1 and started["worker"] and "hook_url" not in started
    progress = [json.loads(d["body"])["progress"] for d in got if d["headers"].get(EVENT) == "progress"]
    assert progress == sorted(progress) and progress[0] >= 0 and progress[-1] <= 1, progress


def test_a_run_a_stop_interrupts_is_announced_as_requeued_and_the_task_still_ends_once(stack, kafka):
    """The daemons in the test process, the engine scripted (the model is not the point): a stop whose
    drain window (1 s) ends inside a 15-s run abandons it, and the next processor runs it to the end."""
    receiver = WebhookReceiver()
    try:
        config = stack.write_config("events.toml", drain_timeout=1, progress_interval=0.2)
        stack.in_process(Uploader, config=config).wait_ready()
        first = stack.in_process(Processor, config=config, name="first", engine=scripted_engine.engine).wait_ready()
        sample = tinymodel.write_sample(stack.root / "short.wav", seconds=1)
        task = stack.task(stack.spool_copy(sample, scripted_engine.input_name("slow-15s")),
                          hook_url=receiver.url, events=["started", "requeued"])
        kafka.send(stack.tasks, task)
        wait_until(lambda: "started" in kinds(receiver, task["task_uuid"]), 120, "the started event", interval=0.1)
        assert first.stop() == 0
        wait_until(lambda: "requeued" in kinds(receiver, task["task_uuid"]), 120, "the requeued event", interval=0.1)
        stack.in_process(Processor, config=config, name="second", engine=scripted_engine.engine).wait_ready()
        wait_until(lambda: "final" in kinds(receiver, task["task_uuid"]), 120, "the final delivery", interval=0.2)
        assert kinds(receiver, task["task_uuid"]) == ["started", "requeued", "started", "final"]
        requeued = json.loads(posts(receiver, task["task_uuid"])[1]["body"])
        assert "drain window" in requeued["reason"], requeued
        assert json.loads(posts(receiver, task["task_uuid"])[3]["body"])["status"] == "success"
    finally:
        receiver.close()
