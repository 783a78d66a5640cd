"""Hostile messages straight on the topics: each gets its own clear failure or dead-letter record,
every offset moves on, and neither daemon restarts (no crash loop on one message)."""

from __future__ import annotations

import json
import signal

from hostile_corpus import result_cases, task_cases
from support import wait_until
from devtools import tinymodel


def test_hostile_tasks_each_fail_clearly_and_the_processor_carries_on(stack, kafka, tmp_path):
    sample = tinymodel.write_sample(tmp_path / "sample.wav", seconds=1).read_bytes()
    outside = tmp_path / "outside.wav"
    outside.write_bytes(sample)
    cases = task_cases(stack.spool, outside, sample)
    p = stack.start()
    p.wait_ready()
    for case in cases:
        kafka.send(stack.tasks, case.value, key=case.key)
    good = stack.task(stack.spool_copy(tmp_path / "sample.wav"))
    kafka.send(stack.tasks, good)
    n = len(cases) + 1
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == n, 120, f"all {n} offsets committed")

    results = kafka.results(stack.results)
    assert len(results) == n, "one result per message"
    for case, result in zip(cases, results):
        assert result["success"] is False and case.words in result["error_message"], (case.name, result)
        assert result["task_uuid"] == case.task_uuid, case.name
        assert len(result["error_message"]) < 5000, f"{case.name}: the error quotes too much"
    assert (results[-1]["task_uuid"], results[-1]["success"]) == (good["task_uuid"], True), "the next task runs"

    dead = kafka.read_all(stack.dead_letter)
    assert [r.value for r in dead] == [c.value or b"" for c in cases], "each bad task is copied verbatim"
    for case, record in zip(cases, dead):
        headers = dict(record.headers)
        assert case.words in headers["uvrd-error"].decode(), case.name
        assert headers["uvrd-stage"] == b"processor"
    assert p.proc.poll() is None and len(p.events("engine starting")) == 1, "no restart on bad input"
    assert outside.read_bytes() == sample, "a file outside the spool is never touched"
    p.signal(signal.SIGTERM)
    assert p.wait_exit(60) == 0  # a bound that ends the test, not a stop-time goal


def test_hostile_results_are_each_dead_lettered_and_the_uploader_carries_on(stack, kafka):
    cases = result_cases(stack.output / "r-1")
    # As in production: hook_urls on private addresses are refused before any connection.
    up = stack.start("uploader", config=stack.write_config(api={"allow_private_urls": False}))
    up.wait_ready(60)
    for case in cases:
        kafka.send(stack.results, case.value, key=b"hostile")
    n = len(cases)
    committed = lambda: kafka.committed(f"{stack.group}-uploader", stack.results).get(0, 0)  # noqa: E731
    wait_until(lambda: committed() == n, 60, f"all {n} offsets committed")

    dead = kafka.read_all(stack.dead_letter)
    assert [r.value for r in dead] == [c.value or b"" for c in cases], "one verbatim dead letter per message"
    for case, record in zip(cases, dead):
        headers = dict(record.headers)
        assert case.words in headers["uvrd-error"].decode(), (case.name, headers["uvrd-error"])
        assert headers["uvrd-stage"] == b"uploader"
    assert up.proc.poll() is None, "no restart on bad input"
    states = [json.loads(r.value) for r in kafka.read_all(stack.status) if r.value]
    assert {s["task_uuid"] for s in states if s.get("state") == "delivery_failed"} == \
        {c.task_uuid for c in cases if c.task_uuid}, "a refused hook_url shows in the task's state"
