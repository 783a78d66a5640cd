"""The uploader against hostile and slow webhook receivers: an uploader in the test process
(tests/inprocess.py), the session broker, and raw TCP receivers on loopback (tests/peers.py),
checked from outside: committed offsets, topics, the receivers' record of calls, and what the
uploader tells systemd (STATUS=) on a notify socket."""

from __future__ import annotations

import json
import statistics
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peers import OK, Hanger, RawPeer, Trickler, hostile_answers
from support import NotifySocket, fuzz_examples, wait_until
from uploader_checks import committed, delivered_once, journal, outcomes, receiver, result_for  # noqa: F401
from uvrd.uploader.daemon import Uploader

READY_S = 60
SETTLE_S = 60  # a bound on each wait, so that a failing test ends; never what a test checks


def uploader(stack, name: str, **settings):
    config = stack.write_config(f"{name}.toml", uploader=settings)
    return stack.in_process(Uploader, config=config, name=name).wait_ready(READY_S)


@pytest.fixture
def hostile(journal, stack):
    """One uploader for every example, and one raw receiver answering each path as the test says."""
    log = journal()
    answers: dict[str, bytes] = {}
    peer = RawPeer(lambda path: answers.get(path, OK))
    up = uploader(stack, "hostile", max_attempts=2, backoff_initial=0.05, backoff_max=0.1, timeout=3)
    yield up, peer, answers, log
    peer.close()


@settings(max_examples=fuzz_examples(20), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(hostile_answers(), min_size=1, max_size=6))
def test_no_answer_from_a_receiver_ends_the_uploader(stack, kafka, hostile, batch):
    """Fuzzed status lines, headers and bodies: every result ends delivered or dead-lettered, the
    offset covers them all, and the uploader is still running."""
    up, peer, answers, log = hostile
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
    wait_until(lambda: not up.running or committed(stack, kafka) == before + len(results), SETTLE_S,
               "every result committed")
    assert up.running, f"the uploader ended: exit {up.exit_code}, {up.error!r}"
    found = outcomes(stack, kafka, [r["task_uuid"] for r in results])
    for task_uuid, (states, dead) in found.items():
        assert states in (["delivered"], ["delivery_failed"]), (task_uuid, states)
        if states == ["delivered"]:
            assert dead == []
        else:
            [headers] = dead
            assert headers["uvrd-stage"] == b"uploader" and headers["uvrd-error"].startswith(b"webhook delivery failed")
    assert found[control["task_uuid"]][0] == ["delivered"]
    assert not log.events("delivery work raised")


def test_a_trickling_or_hanging_receiver_fails_at_the_deadline_and_the_uploader_goes_on(stack, kafka, receiver):
    """uploader.timeout bounds the whole attempt: a receiver that answers a byte every 0.2 s for ever,
    or never, costs its attempts and no more, even with one delivery at a time."""
    trickler, hanger = Trickler(interval=0.2), Hanger()
    try:
        up = uploader(stack, "slow", timeout=1.5, max_attempts=2, concurrency=1, backoff_initial=0.1,
                      backoff_max=0.2)
        slow = [result_for(stack, trickler.url()), result_for(stack, hanger.url())]
        healthy = result_for(stack, receiver.url)
        for result in [*slow, healthy]:
            kafka.send(stack.results, result)
        wait_until(lambda: committed(stack, kafka) == 3, SETTLE_S, "all three committed")
        found = outcomes(stack, kafka, [r["task_uuid"] for r in [*slow, healthy]])
        for result in slow:
            states, [headers] = found[result["task_uuid"]]
            assert states == ["delivery_failed"]
            assert headers["uvrd-error"] == b"webhook delivery failed: DeadlineExceeded: the exchange took over " \
                                            b"1.5 s (after 2 attempts)"
        assert found[healthy["task_uuid"]] == (["delivered"], [])
        assert trickler.paths() == ["/hook", "/hook"] and hanger.paths() == ["/hook", "/hook"]
        # It was answering, a byte at a time: the deadline is on the whole exchange, not on a silence.
        assert trickler.bytes_sent > 0
        assert up.running
    finally:
        trickler.close()
        hanger.close()


def test_a_hanging_receiver_holds_one_slot_and_the_offset_waits_below_it(stack, kafka, receiver, record_property,
                                                                         monkeypatch):
    """uploader.timeout 30 s: while one receiver holds its connection, the results sent after it reach a
    healthy receiver; the committed offset stays below the hanging result until it ends, then covers all."""
    hanger = Hanger()
    # What the uploader tells systemd, on the socket systemd would hold (read when the daemon is made).
    (stack.root / "notify").mkdir()
    notify = NotifySocket(stack.root / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    try:
        uploader(stack, "hang", timeout=30, max_attempts=1)
        stuck = result_for(stack, hanger.url())
        kafka.send(stack.results, stuck)
        wait_until(lambda: hanger.paths(), SETTLE_S, "the hanging delivery to start")
        healthy = [result_for(stack, receiver.url) for _ in range(12)]
        sent = {}
        for result in healthy:
            sent[result["task_uuid"]] = time.monotonic()
            kafka.send(stack.results, result)
        wait_until(lambda: len(receiver.requests) == len(healthy), SETTLE_S, "every healthy webhook")
        all_received = time.monotonic()
        assert hanger.open_connections == 1 and not hanger.released.is_set(), "still held"
        # A STATUS of one delivery in flight, said after the last healthy webhook arrived: the loop has
        # collected the healthy ones (and tried to commit them) since.
        notify.wait_for(lambda line: line.startswith("STATUS=delivering 1 webhook,") and stuck["task_uuid"] in line,
                        SETTLE_S, "only the hanging delivery in flight", since=all_received)
        assert committed(stack, kafka) == 0, "the committed offset waits below the unfinished delivery"
        latencies = sorted(r["at"] - sent[json.loads(r["body"])["task_uuid"]] for r in receiver.requests)
        hanger.release()
        wait_until(lambda: committed(stack, kafka) == 1 + len(healthy), SETTLE_S, "everything committed")
        found = outcomes(stack, kafka, [stuck["task_uuid"], *sent])
        assert found == delivered_once([stuck, *healthy])
        # A figure for the run's summary, not a threshold (the latencies' goals are bench/'s).
        record_property("summary", f"uploader, one receiver hanging (timeout 30 s), concurrency 8: "
                                   f"{len(latencies)} healthy webhooks, latency median "
                                   f"{statistics.median(latencies):.3f} s, max {latencies[-1]:.3f} s")
    finally:
        hanger.close()
        notify.close()
