"""What the processor commits for each outcome: built in one place, from typed outcomes."""

from __future__ import annotations

import json
from types import SimpleNamespace

from uvrd.config import TopicsConfig
from uvrd.messages import Task
from uvrd.outcomes import Cancelled, Delivered, Failed, GaveUp, Rejected, Succeeded
from uvrd.processor.settlement import settlement
from uvrd.uploader.settlement import delivery_settlement

TOPICS = TopicsConfig()
RECORD = SimpleNamespace(topic=TOPICS.tasks, partition=0, offset=41, key=b"k", value=b'{"task_uuid": "t-1"}')
TASK = Task("t-1", "/spool/a.wav", "http://hook.example/x", submitted_at="2026-11-28T00:00:00.000+00:00")


def by_topic(s) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in s.records:
        out.setdefault(r.topic, []).append(r)
    return out


def test_a_success_is_a_result_and_a_status_and_no_dead_letter():
    s = settlement(TOPICS, RECORD, Succeeded({"vocals": "v.wav", "instrumental": "i.wav"}, "m.onnx",
                                             "2026-11-28T00:00:01.000+00:00", 2.5), TASK, "local")
    records = by_topic(s)
    assert set(records) == {TOPICS.results, TOPICS.status}
    result = json.loads(records[TOPICS.results][0].value)
    assert result["success"] is True and result["vocals_path"] == "v.wav" and result["model"] == "m.onnx"
    assert result["submitted_at"] == TASK.submitted_at and result["started_at"].startswith("2026-11-28T00:00:01")
    assert records[TOPICS.results][0].key == b"t-1"
    status = json.loads(records[TOPICS.status][0].value)
    assert (status["state"], status["outcome"], status["progress"]) == ("succeeded", "succeeded", 1.0)


def test_a_failure_adds_a_verbatim_dead_letter_that_says_why_and_whence():
    s = settlement(TOPICS, RECORD, Failed("engine died", "2026-11-28T00:00:01.000+00:00"), TASK, "local")
    records = by_topic(s)
    [dead] = records[TOPICS.dead_letter]
    assert dead.value == RECORD.value and dead.key == RECORD.key
    headers = dict(dead.headers)
    assert headers["uvrd-error"] == b"engine died" and headers["uvrd-source"] == f"{TOPICS.tasks}/0/41".encode()
    assert json.loads(records[TOPICS.results][0].value)["error_message"] == "engine died"
    assert json.loads(records[TOPICS.status][0].value)["state"] == "failed"


def test_a_rejected_message_with_no_task_uuid_has_no_status_and_keeps_the_records_key():
    s = settlement(TOPICS, RECORD, Rejected("task message is not JSON"), None, "local")
    records = by_topic(s)
    assert set(records) == {TOPICS.results, TOPICS.dead_letter}
    assert records[TOPICS.results][0].key == RECORD.key and s.task_uuid is None
    assert json.loads(records[TOPICS.results][0].value)["success"] is False


def test_a_rejected_task_that_names_itself_gets_a_status_under_its_uuid():
    s = settlement(TOPICS, RECORD, Rejected("unknown model", "t-9", "http://h.example/", None), None, "local")
    assert s.task_uuid == "t-9"
    assert json.loads(by_topic(s)[TOPICS.status][0].value) | {"updated_at": None} == {
        "task_uuid": "t-9", "state": "failed", "outcome": "failed", "error_message": "unknown model",
        "finished_at": json.loads(by_topic(s)[TOPICS.results][0].value)["finished_at"], "updated_at": None}


def test_a_delivered_webhook_is_one_status_record():
    s = delivery_settlement(TOPICS, RECORD, "t-1", Delivered(attempts=2, status=204))
    [rec] = s.records
    assert rec.topic == TOPICS.status and rec.key == b"t-1"
    value = json.loads(rec.value)
    assert (value["state"], value["delivery_attempts"]) == ("delivered", 2)
    assert (s.event, s.fields["http_status"]) == ("webhook delivered", 204)


def test_a_webhook_given_up_is_dead_lettered_with_its_reason_and_marked_failed():
    s = delivery_settlement(TOPICS, RECORD, "t-1", GaveUp(attempts=5, reason="the webhook answered HTTP 410"))
    dead, state = s.records
    assert dead.topic == TOPICS.dead_letter and dead.value == RECORD.value
    assert dict(dead.headers)["uvrd-stage"] == b"uploader"
    assert json.loads(state.value)["delivery_error"] == "webhook delivery failed: the webhook answered HTTP 410"
    assert s.level == "warning"


def test_a_cancellation_is_one_final_result_that_old_readers_see_as_a_failure_and_no_dead_letter():
    asked = "2026-11-28T00:00:02.000+00:00"
    s = settlement(TOPICS, RECORD, Cancelled(asked, "2026-11-28T00:00:01.000+00:00"), TASK, "local", asked)
    records = by_topic(s)
    assert set(records) == {TOPICS.results, TOPICS.status, TOPICS.cancellations}
    result = json.loads(records[TOPICS.results][0].value)
    assert (result["success"], result["cancelled"], result["cancel_requested_at"]) == (False, True, asked)
    assert result["hook_url"] == TASK.hook_url and result["error_message"] == "cancelled on request"
    status = json.loads(records[TOPICS.status][0].value)
    assert (status["state"], status["outcome"], status["cancel_requested_at"]) == ("cancelled", "cancelled", asked)
    # The request is settled: its tombstone lets compaction drop it.
    [tombstone] = records[TOPICS.cancellations]
    assert (tombstone.key, tombstone.value) == (b"t-1", None)


def test_a_task_that_succeeded_although_its_cancellation_was_asked_settles_the_request_too():
    s = settlement(TOPICS, RECORD, Succeeded({"vocals": "v.wav"}, "m.onnx", "2026-11-28T00:00:01.000+00:00"), TASK,
                   "local", "2026-11-28T00:00:03.000+00:00")
    records = by_topic(s)
    assert json.loads(records[TOPICS.status][0].value)["state"] == "succeeded"
    assert [(r.key, r.value) for r in records[TOPICS.cancellations]] == [(b"t-1", None)]
    assert TOPICS.cancellations not in by_topic(settlement(TOPICS, RECORD, Failed("x"), TASK, "local"))
