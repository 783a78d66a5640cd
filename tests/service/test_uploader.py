"""The uploader in the test process (tests/inprocess.py) against the session broker and real HTTP
receivers on loopback, checked from outside: committed offsets, the status and dead-letter topics,
the receiver's record of calls, the Prometheus registry (as deltas: it is the test process's) and
the log lines the journal would get.

A stop here is ``InProcessDaemon.stop()``, recorded as SIGTERM is (Lifecycle.request_stop) and
drained by the same code.  What needs a real process (a real SIGTERM, SIGKILL, SIGSTOP) is in
tests/system/test_uploader_signals.py."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import MemberState

from peers import Hanger
from support import FAST_GROUP, RebindingDNS, WebhookReceiver, rebinding_pair, wait_until
from uploader_checks import (Counted, committed, delivered_once, error_header, journal, outcomes,  # noqa: F401
                             receiver, result_for, states, webhook_counts)
from uvrd.config import UploaderConfig
from uvrd.outcomes import Delivered
from uvrd.uploader import webhook
from uvrd.uploader.daemon import Uploader
from uvrd.uploader.delivery import WebhookSender

# Bounds on waits, so that a test that fails ends; none of them is what a test checks.
READY_S = 60
SETTLE_S = 30
NOT_FORMED = ("the consumer group has not formed: this member's rebalance lasts longer than the broker should "
              "let one last; its partitions wait")


def uploader(stack, name: str | None = None, **settings):
    """An uploader in this process with *settings* over the stack's, ready."""
    config = stack.write_config(f"{name or 'uploader'}-{uuid.uuid4().hex[:6]}.toml", uploader=settings) \
        if settings else None
    return stack.in_process(Uploader, config=config, name=name).wait_ready(READY_S)


def wait_committed(stack, kafka, n: int, what: str = "the uploader's commit", timeout: float = SETTLE_S) -> None:
    wait_until(lambda: committed(stack, kafka) == n, timeout, what)


# -- one delivery, and what decides it --------------------------------------------------------

def test_result_is_delivered_once_signed_and_recorded(stack, kafka, receiver):
    up = uploader(stack)
    result = result_for(stack, receiver.url)
    kafka.send(stack.results, result)
    wait_committed(stack, kafka, 1)
    [delivery] = receiver.requests
    body = delivery["body"]
    assert webhook.verify("whsec", delivery["headers"]["X-Uvrd-Signature"], body)
    assert not webhook.verify("other-secret", delivery["headers"]["X-Uvrd-Signature"], body)
    assert delivery["headers"]["Idempotency-Key"] == result["task_uuid"]
    payload = json.loads(body)
    assert payload["task_uuid"] == result["task_uuid"] and payload["status"] == "success"
    assert payload["vocals"].startswith(f"http://127.0.0.1:9/v1/tasks/{result['task_uuid']}/stems/vocals?expires=")
    assert set(payload["stems"]) == {"vocals", "instrumental"} and payload["timestamp"]
    [state] = states(stack, kafka)
    assert state["state"] == "delivered" and state["delivery_attempts"] == 1
    assert kafka.read_all(stack.dead_letter) == []
    assert up.stop() == 0


def test_a_second_result_for_a_task_is_committed_without_a_second_webhook(journal, stack, kafka, receiver):
    """One webhook per task: a task redone after a crash (at-least-once processing), or a result a
    broker exposed twice, reaches the receiver once; every record is committed."""
    log = journal()
    uploader(stack)
    first = result_for(stack, receiver.url)
    again = dict(first, finished_at="later")
    other = result_for(stack, receiver.url)
    for result in (first, again, other):
        kafka.send(stack.results, result)
    wait_committed(stack, kafka, 3, "all three results committed")
    assert webhook_counts(receiver) == {first["task_uuid"]: 1, other["task_uuid"]: 1}
    assert outcomes(stack, kafka, [first["task_uuid"], other["task_uuid"]]) == delivered_once([first, other])
    assert log.events("another result for a task whose webhook went out: not delivered")
    # Later, too, after the first one's commit; its offset alone is committed.
    kafka.send(stack.results, dict(first, finished_at="much later"))
    wait_committed(stack, kafka, 4, "the fourth result committed")
    assert webhook_counts(receiver) == {first["task_uuid"]: 1, other["task_uuid"]: 1}


def test_failures_are_delivered_too(stack, kafka, receiver):
    uploader(stack)
    kafka.send(stack.results, result_for(stack, receiver.url, success=False))
    wait_committed(stack, kafka, 1)
    payload = json.loads(receiver.requests[0]["body"])
    assert payload["status"] == "failed" and payload["error_message"] == "audio file could not be decoded"
    assert payload["vocals"] is None and payload["stems"] == {}


def test_500_twice_then_200_is_one_successful_delivery(stack, kafka):
    r = WebhookReceiver(script=[500, 503])
    try:
        counted = Counted()
        uploader(stack)
        kafka.send(stack.results, result_for(stack, r.url))
        wait_committed(stack, kafka, 1)
        assert [x["status"] for x in r.requests] == [500, 503, 200]
        assert counted.labelled("uvrd_webhook_attempt_seconds_count", "result") == {"failed": 2, "delivered": 1}
        assert counted.labelled("uvrd_webhook_deliveries_total", "outcome") == {"delivered": 1}
        assert counted.value("uvrd_dead_letters_total") == 0
        assert [x["headers"]["X-Uvrd-Delivery-Attempt"] for x in r.requests] == ["1", "2", "3"]
        assert len(r.successes()) == 1
        assert states(stack, kafka)[-1]["delivery_attempts"] == 3
    finally:
        r.close()


def test_receiver_down_past_the_retry_limit_goes_to_the_dead_letter_topic(stack, kafka):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/hook"  # bound, never listening: refused
        counted = Counted()
        uploader(stack, max_attempts=3)
        result = result_for(stack, closed)
        kafka.send(stack.results, result)
        wait_committed(stack, kafka, 1)
    assert counted.labelled("uvrd_webhook_attempt_seconds_count", "result") == {"failed": 3}
    assert counted.labelled("uvrd_webhook_deliveries_total", "reason") == {"attempts_exhausted": 1}
    assert counted.labelled("uvrd_dead_letters_total", "reason") == {"attempts_exhausted": 1}
    [dead] = kafka.read_all(stack.dead_letter)
    assert json.loads(dead.value) == result, "the result is kept verbatim"
    headers = dict(dead.headers)
    assert b"after 3 attempts" in headers["uvrd-error"] and headers["uvrd-stage"] == b"uploader"
    assert states(stack, kafka)[-1]["state"] == "delivery_failed"


def test_a_4xx_answer_is_final(stack, kafka):
    r = WebhookReceiver(script=[410])
    try:
        counted = Counted()
        uploader(stack)
        kafka.send(stack.results, result_for(stack, r.url))
        wait_committed(stack, kafka, 1)
        assert len(r.requests) == 1
        assert counted.labelled("uvrd_webhook_attempt_seconds_count", "result") == {"refused": 1}
        assert counted.labelled("uvrd_dead_letters_total", "reason") == {"refused": 1}
        assert b"HTTP 410" in error_header(kafka.read_all(stack.dead_letter)[0])
    finally:
        r.close()


def test_private_hook_is_refused_when_not_allowed(stack, kafka, receiver):
    config = stack.write_config("ssrf.toml", api={"allow_private_urls": False})
    stack.in_process(Uploader, config=config).wait_ready(READY_S)
    kafka.send(stack.results, result_for(stack, receiver.url))
    wait_committed(stack, kafka, 1)
    assert receiver.requests == []
    assert b"not a public address" in error_header(kafka.read_all(stack.dead_letter)[0])


def test_bad_result_messages_are_dead_lettered_and_the_uploader_carries_on(stack, kafka, receiver):
    up = uploader(stack)
    bad = [b"{oops", b"[]", json.dumps({"task_uuid": "x1", "success": True, "hook_url": 7}).encode(),
           json.dumps({"task_uuid": "../x", "success": True, "hook_url": receiver.url}).encode(),
           json.dumps({"task_uuid": "x2", "success": "yes", "hook_url": receiver.url}).encode()]
    for value in bad:
        kafka.send(stack.results, value, key=b"k")
    good = result_for(stack, receiver.url)
    kafka.send(stack.results, good)
    wait_committed(stack, kafka, len(bad) + 1, "every offset committed")
    assert [r.value for r in kafka.read_all(stack.dead_letter)] == bad
    assert [json.loads(r["body"])["task_uuid"] for r in receiver.requests] == [good["task_uuid"]]
    assert up.running


def test_a_result_without_hook_url_is_committed_without_a_call(stack, kafka, receiver):
    uploader(stack)
    kafka.send(stack.results, result_for(stack, None))
    kafka.send(stack.results, result_for(stack, receiver.url))
    wait_committed(stack, kafka, 2, "both commits")
    assert len(receiver.requests) == 1 and kafka.read_all(stack.dead_letter) == []


def test_results_with_nothing_to_deliver_are_committed_one_after_another(stack, kafka, receiver):
    """Each commits its offset alone, and each sticks (a transaction of offsets alone did not, on Tansu,
    after the first)."""
    uploader(stack)
    for n in range(1, 4):
        kafka.send(stack.results, result_for(stack, None))
        wait_committed(stack, kafka, n, f"result {n} committed")
    assert receiver.requests == [] and kafka.read_all(stack.dead_letter) == []


def test_a_hook_url_whose_dns_answer_changes_is_called_at_the_checked_address(monkeypatch):
    """DNS rebinding on the delivery path: the uploader's own delivery code, in this process, so that
    the resolver can change its answer between the check and the connection."""
    checked, rebound = rebinding_pair()
    try:
        dns = RebindingDNS("hook.rebind.test", first="127.0.0.1", then="127.0.0.2")
        monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
        cfg = UploaderConfig(webhook_secret="whsec", max_attempts=1, timeout=5)
        result = {"task_uuid": str(uuid.uuid4()), "success": False, "error_message": "x",
                  "hook_url": f"http://hook.rebind.test:{checked.port}/hook"}
        outcome = WebhookSender(cfg, allow_private=True, link=None).deliver(result, threading.Event())
        assert outcome == Delivered(attempts=1, status=200)
        assert checked.hits == ["/hook"] and rebound.hits == [] and dns.lookups == 1
    finally:
        checked.close()
        rebound.close()


def test_retention_sweeps_old_stems_but_not_the_input_of_a_task_still_queued(stack):
    old = time.time() - 100  # file ages, set on the files: the sweep's input, not a time the test waits
    stems = stack.output / "8d3c2a5e-0000-4000-8000-000000000001"
    stems.mkdir(parents=True)
    (stems / "vocals.wav").write_bytes(b"RIFF")
    queued = stack.spool / "8d3c2a5e-0000-4000-8000-000000000002.wav"  # a backlog older than `retention`
    queued.write_bytes(b"RIFF")
    orphan = stack.spool / "8d3c2a5e-0000-4000-8000-000000000003.wav"  # older than `spool_retention`
    orphan.write_bytes(b"RIFF")
    for path in (stems / "vocals.wav", stems, queued):
        os.utime(path, (old, old))
    os.utime(orphan, (old - 1000, old - 1000))
    uploader(stack, retention=50, spool_retention=1000, retention_interval=0.2)
    wait_until(lambda: not stems.exists() and not orphan.exists(), SETTLE_S, "the sweep")
    assert queued.exists(), "a queued task's input outlives the stems' retention"


def test_no_secret_reaches_the_log_even_at_debug(journal, stack, kafka, receiver):
    """The log set up as `uvrd uploader` sets it up (logs.configure), at DEBUG, into the file the
    journal's stream would be: neither a configured secret nor a signature made with one is in it."""
    log = journal("DEBUG")
    secrets = {"webhook_secret": "wh-Secret-9", "link_secret": "link-Secret-9", "sasl": "sasl-Secret-9"}
    config = stack.write_config(kafka={"sasl_mechanism": '"PLAIN"', "sasl_plain_username": '"uvrd"',
                                       "sasl_plain_password": f'"{secrets["sasl"]}"'},
                                uploader={"webhook_secret": secrets["webhook_secret"]},
                                api={"link_secret": secrets["link_secret"]})
    up = stack.in_process(Uploader, config=config).wait_ready(READY_S)
    kafka.send(stack.results, result_for(stack, receiver.url))
    wait_committed(stack, kafka, 1)
    assert up.stop() == 0
    [delivery] = receiver.requests
    signature = delivery["headers"]["X-Uvrd-Signature"].partition("v1=")[2]
    text = log.text()
    assert '"level": "debug"' in text and "webhook delivered" in text and "uploader stopped" in text
    for secret in [*secrets.values(), signature]:
        assert secret not in text, f"{secret!r} is in the log"


# -- stops: what is in flight, in backoff, or past the drain deadline ---------------------------

def test_a_stop_during_a_slow_delivery_finishes_it_then_exits(stack, kafka):
    """The stop comes while the receiver holds its answer; the answer comes only after it."""
    hanger = Hanger()
    try:
        up = uploader(stack)
        kafka.send(stack.results, result_for(stack, hanger.url()))
        wait_until(hanger.paths, SETTLE_S, "the delivery to start")
        up.daemon.stop()
        wait_until(lambda: up.daemon.lifecycle.stopping, SETTLE_S, "the stop to be taken")
        hanger.release()
        assert up.wait_exit() == 0
        assert hanger.paths() == ["/hook"]
        assert committed(stack, kafka) == 1
        assert states(stack, kafka)[-1]["state"] == "delivered"
    finally:
        hanger.close()


def test_stop_during_backoff_leaves_the_delivery_to_the_next_uploader(stack, kafka):
    r = WebhookReceiver(script=[503])
    try:
        first = uploader(stack, "first", backoff_initial=30, backoff_max=30, drain_timeout=1)
        kafka.send(stack.results, result_for(stack, r.url))
        wait_until(lambda: r.requests, SETTLE_S, "the first attempt")
        assert first.stop() == 0
        assert committed(stack, kafka) == 0 and kafka.read_all(stack.dead_letter) == []
        uploader(stack, "second")
        wait_committed(stack, kafka, 1, "the second uploader's commit")
        assert [x["status"] for x in r.requests] == [503, 200]
    finally:
        r.close()


def test_at_the_drain_deadline_what_is_contiguous_is_committed_and_the_rest_is_redone(journal, stack, kafka,
                                                                                       receiver):
    log = journal()
    hanger = Hanger()
    try:
        first = uploader(stack, "first", timeout=30, drain_timeout=2)
        done, stuck, later = result_for(stack, receiver.url), result_for(stack, hanger.url()), \
            [result_for(stack, receiver.url) for _ in range(3)]
        results = [done, stuck, *later]
        for result in results:
            kafka.send(stack.results, result)
        wait_until(lambda: len(receiver.requests) == 1 + len(later) and hanger.paths(), SETTLE_S,
                   "all deliveries started")
        wait_committed(stack, kafka, 1, "the first result committed")
        assert first.stop() == 0
        assert committed(stack, kafka) == 1, "nothing past the unfinished delivery"
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == {
            **{r["task_uuid"]: ([], []) for r in results}, **delivered_once([done])}
        assert log.events("stop deadline reached: results left uncommitted for the next uploader")
        hanger.release()
        uploader(stack, "second", timeout=30)
        wait_committed(stack, kafka, len(results), "every result committed", timeout=90)
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
        counts = webhook_counts(receiver)
        assert counts[done["task_uuid"]] == 1 and [counts[r["task_uuid"]] for r in later] == [2] * len(later)
    finally:
        hanger.close()


# -- rebalances ---------------------------------------------------------------------------------

def holds(up, tp: TopicPartition) -> bool:
    """Whether *up*'s consumer is assigned *tp* (read from its member; for a wait, not an assertion)."""
    member = up.daemon.member
    return member is not None and tp in member.consumer.assignment()


def generation(up) -> int | None:
    member = up.daemon.member
    return member.generation() if member is not None else None


def test_rebalances_mid_delivery_change_no_outcome(stack, kafka, receiver):
    """A second uploader joins while deliveries are in flight: the first keeps them if it keeps the
    partition, drops them if not (and the second redoes everything uncommitted).  Whichever it is,
    each result has exactly one status record.  (A member frozen past its session, which loses the
    partition without a rebalance it takes part in, is in tests/system/test_uploader_signals.py.)"""
    hanger = Hanger()
    try:
        first = uploader(stack, "first", timeout=60)
        results = [result_for(stack, hanger.url()), *[result_for(stack, receiver.url) for _ in range(5)]]
        healthy = results[1:]
        for result in results:
            kafka.send(stack.results, result)
        wait_until(lambda: len(receiver.requests) == len(healthy) and hanger.paths(), SETTLE_S,
                   "deliveries in flight")
        generation_before = generation(first)
        second = uploader(stack, "second", timeout=60)
        tp = TopicPartition(stack.results, 0)
        wait_until(lambda: generation(first) == generation(second) != generation_before
                   and holds(first, tp) != holds(second, tp), 60, "the rebalance to give the partition to one")
        kept = holds(first, tp)
        # A second that took the partition starts again at the committed offset, below the hanging one.
        wait_until(lambda: len(hanger.paths()) == (1 if kept else 2), SETTLE_S, "the owner's delivery in flight")
        hanger.release()
        wait_committed(stack, kafka, len(results), "every result committed", timeout=60)
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
        # Once each if the owner kept its work, twice if it was redone: as often as the hanging one was called.
        assert webhook_counts(receiver) == {r["task_uuid"]: len(hanger.paths()) for r in healthy}
        assert first.running and second.running
    finally:
        hanger.close()


# -- a group that does not form -------------------------------------------------------------------

def test_a_group_the_broker_never_lets_form_is_said_in_the_journal_and_status(journal, stack, kafka):
    """The broker here keeps a leader that left a forming round as the leader of every later round
    (Tansu 0.6.0, the one-host broker; uvrd's own members never leave so, group_leave.py): the group
    never forms again.  The uploader cannot mend that; it says so rather than wait in silence."""
    j = journal()
    group = f"{stack.group}-uploader"
    leader = KafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=group, enable_auto_commit=False, **FAST_GROUP)
    try:
        leader.subscribe([stack.results])
        wait_until(lambda: leader.poll(timeout_ms=100) == {} and leader.assignment(), SETTLE_S, "the leader's assignment")
        up = uploader(stack)
        wait_until(lambda: leader.poll(timeout_ms=100) == {} and leader._coordinator.state is MemberState.REBALANCING,
                   SETTLE_S, "the round the uploader's join began")
    finally:
        leader.close(autocommit=False)  # kafka-python's own LeaveGroup, in the middle of the round
    bound_s = (FAST_GROUP["max_poll_interval_ms"] + FAST_GROUP["session_timeout_ms"]) / 1000
    wait_until(lambda: j.events(NOT_FORMED), bound_s + SETTLE_S, "the journal's word on the group")
    [told] = j.events(NOT_FORMED)
    assert told["group_id"] == group and told["lasted_s"] >= bound_s
    assert up.daemon.status().startswith(f"waiting for the consumer group {group} to form: ")
    assert up.daemon.member is not None and not up.daemon.member.consumer.assignment()
