"""The uploader against a real broker and a real HTTP receiver."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import uuid

import pytest

from peers import Hanger
from scrape import listen as scrape_listen
from scrape import scrape
from support import RebindingDNS, WebhookReceiver, rebinding_pair, wait_until
from uvrd.config import UploaderConfig
from uvrd.outcomes import Delivered
from uvrd.uploader import webhook
from uvrd.uploader.delivery import WebhookSender


@pytest.fixture
def receiver():
    r = WebhookReceiver()
    yield r
    r.close()


def result_for(stack, hook_url, success=True, **extra):
    task_uuid = str(uuid.uuid4())
    value = {"task_uuid": task_uuid, "success": success, "hook_url": hook_url, **extra}
    if success:
        stems = {"vocals": str(stack.output / task_uuid / "vocals.wav"),
                 "instrumental": str(stack.output / task_uuid / "instrumental.wav")}
        value.update(stems=stems, vocals_path=stems["vocals"], instrumental_path=stems["instrumental"])
    else:
        value["error_message"] = "audio file could not be decoded"
    return value


def uploader_group(stack):
    return f"{stack.group}-uploader"


def committed(stack, kafka):
    return kafka.committed(uploader_group(stack), stack.results).get(0, 0)


def states(stack, kafka):
    return [json.loads(r.value) for r in kafka.read_all(stack.status)]


def test_result_is_delivered_once_signed_and_recorded(stack, kafka, receiver):
    up = stack.start("uploader")
    up.wait_ready(60)
    result = result_for(stack, receiver.url)
    kafka.send(stack.results, result)
    wait_until(lambda: committed(stack, kafka) == 1, 30, "the uploader's commit")
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
    up.signal(signal.SIGTERM)
    assert up.wait_exit(10) == 0


def test_a_second_result_for_a_task_is_committed_without_a_second_webhook(stack, kafka, receiver):
    """One webhook per task: a task redone after a crash (at-least-once processing), or a result a
    broker exposed twice, reaches the receiver once; every record is committed."""
    up = stack.start("uploader")
    up.wait_ready(60)
    first = result_for(stack, receiver.url)
    again = dict(first, finished_at="later")
    other = result_for(stack, receiver.url)
    for result in (first, again, other):
        kafka.send(stack.results, result)
    wait_until(lambda: committed(stack, kafka) == 3, 30, "all three results committed")
    assert webhook_counts(receiver) == {first["task_uuid"]: 1, other["task_uuid"]: 1}
    assert outcomes(stack, kafka, [first["task_uuid"], other["task_uuid"]]) == delivered_once([first, other])
    assert up.events("another result for a task whose webhook went out: not delivered")
    # Later, too, after the first one's commit; its offset alone is committed.
    kafka.send(stack.results, dict(first, finished_at="much later"))
    wait_until(lambda: committed(stack, kafka) == 4, 30, "the fourth result committed")
    assert webhook_counts(receiver) == {first["task_uuid"]: 1, other["task_uuid"]: 1}


def test_failures_are_delivered_too(stack, kafka, receiver):
    up = stack.start("uploader")
    up.wait_ready(60)
    kafka.send(stack.results, result_for(stack, receiver.url, success=False))
    wait_until(lambda: committed(stack, kafka) == 1, 30, "the commit")
    payload = json.loads(receiver.requests[0]["body"])
    assert payload["status"] == "failed" and payload["error_message"] == "audio file could not be decoded"
    assert payload["vocals"] is None and payload["stems"] == {}


def test_500_twice_then_200_is_one_successful_delivery(stack, kafka):
    r = WebhookReceiver(script=[500, 503])
    metrics = scrape_listen()
    try:
        up = stack.start("uploader", config=stack.write_config(uploader={"metrics_listen": metrics}))
        up.wait_ready(60)
        kafka.send(stack.results, result_for(stack, r.url))
        wait_until(lambda: committed(stack, kafka) == 1, 30, "the commit")
        assert [x["status"] for x in r.requests] == [500, 503, 200]
        counted = scrape(metrics)
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
        metrics = scrape_listen()
        up = stack.start("uploader", config=stack.write_config("down.toml", uploader={"max_attempts": 3,
                                                                                      "metrics_listen": metrics}))
        up.wait_ready(60)
        result = result_for(stack, closed)
        kafka.send(stack.results, result)
        wait_until(lambda: committed(stack, kafka) == 1, 30, "the commit")
    counted = scrape(metrics)
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
    metrics = scrape_listen()
    try:
        up = stack.start("uploader", config=stack.write_config(uploader={"metrics_listen": metrics}))
        up.wait_ready(60)
        kafka.send(stack.results, result_for(stack, r.url))
        wait_until(lambda: committed(stack, kafka) == 1, 30, "the commit")
        assert len(r.requests) == 1
        counted = scrape(metrics)
        assert counted.labelled("uvrd_webhook_attempt_seconds_count", "result") == {"refused": 1}
        assert counted.labelled("uvrd_dead_letters_total", "reason") == {"refused": 1}
        assert b"HTTP 410" in dict(kafka.read_all(stack.dead_letter)[0].headers)["uvrd-error"]
    finally:
        r.close()


def test_private_hook_is_refused_when_not_allowed(stack, kafka, receiver):
    up = stack.start("uploader", config=stack.write_config("ssrf.toml", api={"allow_private_urls": False}))
    up.wait_ready(60)
    kafka.send(stack.results, result_for(stack, receiver.url))
    wait_until(lambda: committed(stack, kafka) == 1, 30, "the commit")
    assert receiver.requests == []
    assert b"not a public address" in dict(kafka.read_all(stack.dead_letter)[0].headers)["uvrd-error"]


def test_bad_result_messages_are_dead_lettered_and_the_uploader_carries_on(stack, kafka, receiver):
    up = stack.start("uploader")
    up.wait_ready(60)
    bad = [b"{oops", b"[]", json.dumps({"task_uuid": "x1", "success": True, "hook_url": 7}).encode(),
           json.dumps({"task_uuid": "../x", "success": True, "hook_url": receiver.url}).encode(),
           json.dumps({"task_uuid": "x2", "success": "yes", "hook_url": receiver.url}).encode()]
    for value in bad:
        kafka.send(stack.results, value, key=b"k")
    good = result_for(stack, receiver.url)
    kafka.send(stack.results, good)
    wait_until(lambda: committed(stack, kafka) == len(bad) + 1, 30, "every offset committed")
    assert [r.value for r in kafka.read_all(stack.dead_letter)] == bad
    assert [json.loads(r["body"])["task_uuid"] for r in receiver.requests] == [good["task_uuid"]]
    assert up.proc.poll() is None


def test_sigterm_during_a_slow_delivery_finishes_it_then_exits(stack, kafka):
    r = WebhookReceiver(delay=3)
    try:
        up = stack.start("uploader")
        up.wait_ready(60)
        kafka.send(stack.results, result_for(stack, r.url))
        wait_until(lambda: r.requests, 30, "the delivery to start")
        up.signal(signal.SIGTERM)
        assert up.wait_exit(30) == 0
        assert len(r.successes()) == 1
        assert committed(stack, kafka) == 1
        assert states(stack, kafka)[-1]["state"] == "delivered"
    finally:
        r.close()


def test_stop_during_backoff_leaves_the_delivery_to_the_next_uploader(stack, kafka):
    r = WebhookReceiver(script=[503])
    try:
        config = stack.write_config("slowretry.toml", uploader={"backoff_initial": 30, "backoff_max": 30,
                                                                 "drain_timeout": 1})
        first = stack.start("uploader", config=config)
        first.wait_ready(60)
        kafka.send(stack.results, result_for(stack, r.url))
        wait_until(lambda: r.requests, 30, "the first attempt")
        first.signal(signal.SIGTERM)
        assert first.wait_exit(15) == 0
        assert committed(stack, kafka) == 0 and kafka.read_all(stack.dead_letter) == []
        second = stack.start("uploader")
        second.wait_ready(60)
        wait_until(lambda: committed(stack, kafka) == 1, 30, "the second uploader's commit")
        assert [x["status"] for x in r.requests] == [503, 200]
    finally:
        r.close()


def test_a_result_without_hook_url_is_committed_without_a_call(stack, kafka, receiver):
    up = stack.start("uploader")
    up.wait_ready(60)
    kafka.send(stack.results, result_for(stack, None))
    kafka.send(stack.results, result_for(stack, receiver.url))
    wait_until(lambda: committed(stack, kafka) == 2, 30, "both commits")
    assert len(receiver.requests) == 1 and kafka.read_all(stack.dead_letter) == []


def test_results_with_nothing_to_deliver_are_committed_one_after_another(stack, kafka, receiver):
    """Each commits its offset alone, and each sticks (a transaction of offsets alone did not, on Tansu,
    after the first)."""
    up = stack.start("uploader")
    up.wait_ready(60)
    for n in range(1, 4):
        kafka.send(stack.results, result_for(stack, None))
        wait_until(lambda: committed(stack, kafka) == n, 30, f"result {n} committed")
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
    old = time.time() - 100
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
    config = stack.write_config("sweep.toml", uploader={"retention": 50, "spool_retention": 1000,
                                                        "retention_interval": 0.2})
    up = stack.start("uploader", config=config)
    up.wait_ready(60)
    wait_until(lambda: not stems.exists() and not orphan.exists(), 10, "the sweep")
    assert queued.exists(), "a queued task's input outlives the stems' retention"


def test_no_secret_reaches_the_log_even_at_debug(stack, kafka, receiver):
    secrets = {"webhook_secret": "wh-Secret-9", "link_secret": "link-Secret-9", "sasl": "sasl-Secret-9"}
    config = stack.write_config(kafka={"sasl_mechanism": '"PLAIN"', "sasl_plain_username": '"uvrd"',
                                       "sasl_plain_password": f'"{secrets["sasl"]}"'},
                                uploader={"webhook_secret": secrets["webhook_secret"]},
                                api={"link_secret": secrets["link_secret"]})
    up = stack.start("uploader", config=config, env={"UVRD_LOG_LEVEL": "DEBUG"})
    up.wait_ready(60)
    kafka.send(stack.results, result_for(stack, receiver.url))
    wait_until(lambda: committed(stack, kafka) == 1, 30, "the uploader's commit")
    up.signal(signal.SIGTERM)
    assert up.wait_exit(10) == 0
    [delivery] = receiver.requests
    signature = delivery["headers"]["X-Uvrd-Signature"].partition("v1=")[2]
    text = up.log_text()
    assert '"level": "debug"' in text and "webhook delivered" in text
    for secret in [*secrets.values(), signature]:
        assert secret not in text, f"{secret!r} is in the log"


# -- concurrent deliveries: exactly-once through stops, kills and rebalances -------------------------

def outcomes(stack, kafka, task_uuids) -> dict[str, tuple[list[str], list[dict]]]:
    """Per task: the states of its status records, and the headers of its dead-letter records."""
    found = {t: ([], []) for t in task_uuids}
    for state in states(stack, kafka):
        if state["task_uuid"] in found:
            found[state["task_uuid"]][0].append(state["state"])
    for record in kafka.read_all(stack.dead_letter):
        task_uuid = json.loads(record.value)["task_uuid"]
        if task_uuid in found:
            found[task_uuid][1].append(dict(record.headers))
    return found


def delivered_once(results) -> dict:
    """What :func:`outcomes` gives when each result was delivered and recorded exactly once."""
    return {r["task_uuid"]: (["delivered"], []) for r in results}


def webhook_counts(receiver) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in receiver.requests:
        task_uuid = json.loads(request["body"])["task_uuid"]
        counts[task_uuid] = counts.get(task_uuid, 0) + 1
    return counts


def test_sigkill_with_deliveries_in_flight_duplicates_and_loses_no_record(stack, kafka, receiver):
    """Deliveries finished above an unfinished one wait uncommitted; after a SIGKILL the next uploader
    (the same unit, so the same transactional id) delivers them again, and every result still has
    exactly one status record and no dead letter."""
    hanger = Hanger()
    try:
        config = stack.write_config("kill.toml", uploader={"timeout": 30, "max_attempts": 2})
        unit = {"UVRD_UPLOADER_TRANSACTIONAL_ID": f"{stack.group}-the-uploader-unit"}
        first = stack.start("uploader", config=config, env=unit)
        first.wait_ready(60)
        before = [result_for(stack, receiver.url) for _ in range(3)]
        stuck = result_for(stack, hanger.url())
        after = [result_for(stack, receiver.url) for _ in range(6)]
        results = [*before, stuck, *after]
        for result in results:
            kafka.send(stack.results, result)
        wait_until(lambda: len(receiver.requests) == len(before) + len(after) and hanger.paths(), 60,
                   "every healthy webhook, and the hanging one in flight")
        wait_until(lambda: committed(stack, kafka) == len(before), 30, "the results below the hanging one committed")
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait_exit(10) == -signal.SIGKILL
        hanger.release()
        second = stack.start("uploader", config=config, env=unit)
        second.wait_ready(60)
        wait_until(lambda: committed(stack, kafka) == len(results), 90, "every result committed")
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
        counts = webhook_counts(receiver)
        assert [counts[r["task_uuid"]] for r in before] == [1] * len(before), "committed: not delivered again"
        assert [counts[r["task_uuid"]] for r in after] == [2] * len(after), "uncommitted: delivered again"
        assert hanger.paths() == ["/hook", "/hook"]
    finally:
        hanger.close()


def test_sigterm_lets_the_deliveries_in_flight_finish_and_commits_them(stack, kafka):
    r = WebhookReceiver(delay=3)
    try:
        up = stack.start("uploader")
        up.wait_ready(60)
        results = [result_for(stack, r.url) for _ in range(4)]
        for result in results:
            kafka.send(stack.results, result)
        wait_until(lambda: len(r.requests) == len(results), 30, "all four deliveries in flight")
        arrivals = [x["at"] for x in r.requests]
        assert max(arrivals) - min(arrivals) < r.delay, "the last arrived before the first was answered"
        up.signal(signal.SIGTERM)
        assert up.wait_exit(30) == 0
        assert len(r.successes()) == len(results)
        assert committed(stack, kafka) == len(results)
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
    finally:
        r.close()


def test_at_the_drain_deadline_what_is_contiguous_is_committed_and_the_rest_is_redone(stack, kafka, receiver):
    hanger = Hanger()
    try:
        config = stack.write_config("drain.toml", uploader={"timeout": 30, "drain_timeout": 2})
        first = stack.start("uploader", config=config)
        first.wait_ready(60)
        done, stuck, later = result_for(stack, receiver.url), result_for(stack, hanger.url()), \
            [result_for(stack, receiver.url) for _ in range(3)]
        results = [done, stuck, *later]
        for result in results:
            kafka.send(stack.results, result)
        wait_until(lambda: len(receiver.requests) == 1 + len(later) and hanger.paths(), 30, "all deliveries started")
        wait_until(lambda: committed(stack, kafka) == 1, 30, "the first result committed")
        first.signal(signal.SIGTERM)
        assert first.wait_exit(20) == 0
        assert committed(stack, kafka) == 1, "nothing past the unfinished delivery"
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == {
            **{r["task_uuid"]: ([], []) for r in results}, **delivered_once([done])}
        assert "stop deadline reached" in first.log_text()
        hanger.release()
        second = stack.start("uploader", config=config)
        second.wait_ready(60)
        wait_until(lambda: committed(stack, kafka) == len(results), 90, "every result committed")
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
        counts = webhook_counts(receiver)
        assert counts[done["task_uuid"]] == 1 and [counts[r["task_uuid"]] for r in later] == [2] * len(later)
    finally:
        hanger.close()


def assigned_partitions(daemon) -> list | None:
    """What the daemon's last rebalance gave it (None before its first)."""
    events = daemon.events("partitions assigned")
    return events[-1]["partitions"] if events else None


def test_rebalances_mid_delivery_change_no_outcome(stack, kafka, receiver):
    """A second uploader joins while deliveries are in flight: the first keeps them if it keeps the
    partition, drops them if not.  Then the owner is frozen (SIGSTOP) past its session: the other
    takes over and redoes what was uncommitted, and the frozen one, thawed, drops its outcomes.
    Whatever happened, each result has exactly one status record."""
    hanger = Hanger()
    try:
        config = stack.write_config("pair.toml", uploader={"timeout": 60})
        first = stack.start("uploader", config=config)
        first.wait_ready(60)
        results = [result_for(stack, hanger.url()), *[result_for(stack, receiver.url) for _ in range(5)]]
        for result in results:
            kafka.send(stack.results, result)
        wait_until(lambda: len(receiver.requests) == 5 and hanger.paths(), 30, "deliveries in flight")
        second = stack.start("uploader", config=config)
        second.wait_ready(60)
        wait_until(lambda: assigned_partitions(second) is not None and len(first.events("partitions assigned")) == 2,
                   60, "the rebalance")
        owner, other = (first, second) if assigned_partitions(first) else (second, first)
        # Frozen only with the hanging delivery in flight, or it would have nothing to let go.  A second
        # that took the partition starts again at the committed offset: the hanger hears from it too.
        wait_until(lambda: len(hanger.paths()) == (1 if owner is first else 2), 30, "the owner's delivery in flight")
        owner.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: assigned_partitions(other), 60, "the other uploader to take the partition")
            hanger.release()
            wait_until(lambda: committed(stack, kafka) == len(results), 60, "every result committed")
        finally:
            owner.proc.send_signal(signal.SIGCONT)
        try:
            wait_until(lambda: [e for e in owner.log_events() if e["event"].startswith("partition moved to another")],
                       60, "the thawed one to let go")
        except AssertionError as e:
            raise AssertionError(f"{e}; the owner ({'first' if owner is first else 'second'}) said:\n"
                                 + owner.log_text()[-4000:]) from None
        assert committed(stack, kafka) == len(results)
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
        assert set(webhook_counts(receiver)) == {r["task_uuid"] for r in results[1:]}
        assert first.proc.poll() is None and second.proc.poll() is None
    finally:
        hanger.close()
