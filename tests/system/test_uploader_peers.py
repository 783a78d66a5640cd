"""The uploader against hostile and slow webhook receivers: a real ``uvrd uploader`` daemon, a real
broker, and raw TCP receivers on loopback (tests/peers.py), checked from outside."""

from __future__ import annotations

import json
import statistics
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peers import OK, Hanger, RawPeer, Trickler, hostile_answers
from support import fuzz_examples, wait_until
from test_uploader import committed, delivered_once, outcomes, receiver, result_for  # noqa: F401 (a fixture)


@pytest.fixture
def hostile(stack):
    """One uploader for every example, and one raw receiver answering each path as the test says."""
    answers: dict[str, bytes] = {}
    peer = RawPeer(lambda path: answers.get(path, OK))
    config = stack.write_config("hostile.toml", uploader={"max_attempts": 2, "backoff_initial": 0.05,
                                                          "backoff_max": 0.1, "timeout": 3})
    up = stack.start("uploader", config=config)
    up.wait_ready(60)
    yield up, peer, answers
    peer.close()


@settings(max_examples=fuzz_examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(hostile_answers(), min_size=1, max_size=6))
def test_no_answer_from_a_receiver_ends_the_uploader(stack, kafka, hostile, batch):
    """Fuzzed status lines, headers and bodies: every result ends delivered or dead-lettered, the
    offset covers them all, and the uploader is still running."""
    up, peer, answers = hostile
    results = []
    for answer in batch:
        result = result_for(stack, None)
        path = f"/{result['task_uuid']}"
        answers[path] = answer
        results.append({**result, "hook_url": peer.url(path)})
    control = result_for(stack, peer.url("/control"))  # a well-formed 200, after the hostile ones
    results.append(control)
    before = committed(stack, kafka)
    for result in results:
        kafka.send(stack.results, result)
    wait_until(lambda: up.proc.poll() is not None or committed(stack, kafka) == before + len(results), 60,
               "every result committed")
    assert up.proc.poll() is None, f"the uploader exited:\n{up.log_text()[-3000:]}"
    found = outcomes(stack, kafka, [r["task_uuid"] for r in results])
    for task_uuid, (states, dead) in found.items():
        assert states in (["delivered"], ["delivery_failed"]), (task_uuid, states)
        if states == ["delivered"]:
            assert dead == []
        else:
            [headers] = dead
            assert headers["uvrd-stage"] == b"uploader" and headers["uvrd-error"].startswith(b"webhook delivery failed")
    assert found[control["task_uuid"]][0] == ["delivered"]
    assert "delivery work raised" not in up.log_text()


def test_a_trickling_or_hanging_receiver_fails_at_the_deadline_and_the_uploader_goes_on(stack, kafka, receiver):
    """uploader.timeout bounds the whole attempt: a receiver that answers a byte every 0.2 s for ever,
    or never, costs its attempts and no more, even with one delivery at a time."""
    trickler, hanger = Trickler(interval=0.2), Hanger()
    try:
        config = stack.write_config("slow.toml", uploader={"timeout": 1.5, "max_attempts": 2, "concurrency": 1,
                                                           "backoff_initial": 0.1, "backoff_max": 0.2})
        up = stack.start("uploader", config=config)
        up.wait_ready(60)
        slow = [result_for(stack, trickler.url()), result_for(stack, hanger.url())]
        healthy = result_for(stack, receiver.url)
        for result in [*slow, healthy]:
            kafka.send(stack.results, result)
        wait_until(lambda: committed(stack, kafka) == 3, 60, "all three committed")
        found = outcomes(stack, kafka, [r["task_uuid"] for r in [*slow, healthy]])
        for result in slow:
            states, [headers] = found[result["task_uuid"]]
            assert states == ["delivery_failed"]
            assert headers["uvrd-error"] == b"webhook delivery failed: DeadlineExceeded: the exchange took over " \
                                            b"1.5 s (after 2 attempts)"
        assert found[healthy["task_uuid"]] == (["delivered"], [])
        assert trickler.paths() == ["/hook", "/hook"] and hanger.paths() == ["/hook", "/hook"]
        assert trickler.bytes_sent >= 10, "the trickler was answering, a byte at a time, all along"
        assert up.proc.poll() is None
    finally:
        trickler.close()
        hanger.close()


def test_a_hanging_receiver_holds_one_slot_and_the_offset_waits_below_it(stack, kafka, receiver, record_property):
    """uploader.timeout 30 s: while one receiver holds its connection, the results sent after it reach a
    healthy receiver; the committed offset stays below the hanging result until it ends, then covers all."""
    hanger = Hanger()
    try:
        config = stack.write_config("hang.toml", uploader={"timeout": 30, "max_attempts": 1})
        up = stack.start("uploader", config=config)
        up.wait_ready(60)
        stuck = result_for(stack, hanger.url())
        kafka.send(stack.results, stuck)
        wait_until(lambda: hanger.paths(), 30, "the hanging delivery to start")
        healthy = [result_for(stack, receiver.url) for _ in range(12)]
        sent = {}
        for result in healthy:
            sent[result["task_uuid"]] = time.monotonic()
            kafka.send(stack.results, result)
        wait_until(lambda: len(receiver.requests) == len(healthy), 60, "every healthy webhook")
        all_received = time.monotonic()
        assert hanger.open_connections == 1 and not hanger.released.is_set(), "still held"
        # A STATUS of one delivery in flight, said after the last healthy webhook arrived: the loop has
        # collected the healthy ones (and tried to commit them) since.
        up.notify.wait_for(lambda line: line.startswith("STATUS=delivering 1 webhook,") and stuck["task_uuid"] in line,
                           30, "only the hanging delivery in flight", since=all_received)
        assert committed(stack, kafka) == 0, "the committed offset waits below the unfinished delivery"
        latencies = sorted(r["at"] - sent[json.loads(r["body"])["task_uuid"]] for r in receiver.requests)
        hanger.release()
        wait_until(lambda: committed(stack, kafka) == 1 + len(healthy), 30, "everything committed")
        found = outcomes(stack, kafka, [stuck["task_uuid"], *sent])
        assert found == delivered_once([stuck, *healthy])
        record_property("summary", f"uploader, one receiver hanging (timeout 30 s), concurrency 8: "
                                   f"{len(latencies)} healthy webhooks, latency median "
                                   f"{statistics.median(latencies):.3f} s, max {latencies[-1]:.3f} s")
    finally:
        hanger.close()
