"""Idempotency-Key's rules: the header's value, the record of a submission and its 24-hour window,
and what makes two requests the same."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from werkzeug.datastructures import MultiDict

from uvrd.api import idempotency
from uvrd.api.errors import ApiError
from uvrd.boards import idempotency as records
from uvrd.boards.idempotency import IdempotencyBoard, Submission, TaskRef
from uvrd.config import KafkaConfig

UUIDS = ("3f0c4a5e-0000-4000-8000-000000000001", "3f0c4a5e-0000-4000-8000-000000000002")


@pytest.mark.parametrize("value", ["a", "order-17", "x" * 255, " inner spaces ok ", "~!@#$%^&*()"])
def test_a_value_of_1_to_255_printable_ascii_characters_is_taken_as_it_is(value):
    assert records.check_value(value) == value


@pytest.mark.parametrize("value", ["", "   ", "x" * 256, "caf\xe9", "tab\there", "nul\x00", "del\x7f", "\u2603"])
def test_any_other_value_is_refused_with_a_sentence(value):
    with pytest.raises(records.BadIdempotencyKey, match="Idempotency-Key"):
        records.check_value(value)
    with pytest.raises(ApiError) as refused:
        idempotency.header({"Idempotency-Key": value})
    assert refused.value.status == 400


def test_no_header_is_no_idempotency():
    assert idempotency.header({}) is None


def submission(at: datetime, caller: str = "app", value: str = "k1", batch: bool = False) -> Submission:
    return Submission(caller, value, "hash", at.isoformat(timespec="milliseconds"),
                      tuple(TaskRef(u, f"{i}.wav") for i, u in enumerate(UUIDS[:2 if batch else 1])), batch)


def test_a_record_travels_whole_and_is_keyed_by_a_hash_of_caller_and_value():
    made = submission(datetime.now(UTC), batch=True)
    out = made.record("idem")
    assert out.key == records.record_key("app", "k1").encode() and b"k1" not in out.key
    assert records.parse(out.value) == made
    # The caller is part of the key: another key's same value is another record.
    assert records.record_key("app", "k1") != records.record_key("app2", "k1")
    assert records.record_key("a\nb", "c") != records.record_key("a", "b\nc")


@pytest.mark.parametrize("value", [b"", b"[]", b"{}", b'{"caller": "a"}', json.dumps(
    {"caller": "a", "idempotency_key": "k", "request_hash": "h", "submitted_at": "t",
     "tasks": [{"task_uuid": 7}]}).encode()])
def test_a_record_that_is_none_of_ours_is_ignored(value):
    assert records.parse(value) is None


def test_a_submission_counts_for_24_hours():
    now = datetime.now(UTC)
    assert submission(now - timedelta(hours=23, minutes=59)).fresh(now)
    assert not submission(now - timedelta(hours=24)).fresh(now)


def fold(board: IdempotencyBoard, made: Submission) -> None:
    out = made.record("idem")
    board.fold(SimpleNamespace(key=out.key, value=out.value))


def test_the_board_answers_only_the_same_caller_and_value_within_the_window():
    board = IdempotencyBoard(KafkaConfig(), "idem")
    now = datetime.now(UTC)
    fold(board, submission(now))
    fold(board, submission(now - timedelta(days=2), value="old"))
    assert board.get("app", "k1") is not None
    assert board.get("other", "k1") is None
    assert board.get("app", "old") is None  # past the window, and not kept
    board.fold(SimpleNamespace(key=records.record_key("app", "k1").encode(), value=None))
    assert board.get("app", "k1") is None


def upload(content: bytes, name: str = "a.wav"):
    return (name, io.BytesIO(content))


def test_two_requests_are_the_same_when_their_fields_and_files_are():
    form = MultiDict([("hook_url", "https://h/"), ("priority", "3")])
    same = idempotency.form_hash(MultiDict([("priority", "3"), ("hook_url", "https://h/")]), [upload(b"abc")])
    assert idempotency.form_hash(form, [upload(b"abc")]) == same
    assert idempotency.form_hash(form, [upload(b"abd")]) != same
    assert idempotency.form_hash(form, [upload(b"abc", "b.wav")]) != same
    assert idempotency.form_hash(form, [upload(b"abc"), upload(b"abc")]) != same
    assert idempotency.form_hash(MultiDict([("hook_url", "https://h/"), ("priority", "4")]), [upload(b"abc")]) != same
    assert idempotency.json_hash({"audio": "u", "priority": 3}) == idempotency.json_hash({"priority": 3, "audio": "u"})
    assert idempotency.json_hash({"audio": "u"}) != idempotency.json_hash({"audio": "v"})


def test_a_hashed_file_is_left_at_its_start_for_the_spool():
    stream = io.BytesIO(b"audio bytes")
    idempotency.form_hash(MultiDict(), [("a.wav", stream)])
    assert stream.read() == b"audio bytes"


class FakeMode:
    """A transaction whose commit goes unanswered; its successor's init answers *reopen*."""

    def __init__(self, reopen: Exception | None = None, last_error: Exception | None = None):
        self.producer = SimpleNamespace(_transaction_manager=SimpleNamespace(last_error=last_error))
        self.reopen = reopen

    def commit(self, records, offsets):
        from uvrd.kafka.commit_mode import Unanswered

        self.records = records
        raise Unanswered("the broker did not answer the commit within 8 s")

    def close(self, timeout):
        pass

    def open(self):
        if self.reopen is not None:
            raise self.reopen


def unanswered(mode: FakeMode, landed: bool):
    """What Fence.commit makes of a commit whose end went unanswered, and the inputs it discarded."""
    from uvrd.api import queueing
    from uvrd.api.fields import Submission as Fields
    from uvrd.boards.status import StatusBoard
    from uvrd.config import Config

    config = Config()
    discarded: list[str] = []
    board = IdempotencyBoard(KafkaConfig(), "idem")
    backend = SimpleNamespace(board=StatusBoard(KafkaConfig(), "status"), idempotency=board,
                              end_offsets=lambda topic: {0: 0})
    api = SimpleNamespace(config=config, backend=backend,
                          storage=SimpleNamespace(name="local", discard_input=discarded.append))
    stored = [queueing.Stored(u, f"/spool/{u}.wav", 10, None, 1.0) for u in UUIDS]
    if landed:
        board.note(Submission("app", "k1", "hash", datetime.now(UTC).isoformat(), tuple(TaskRef(u) for u in UUIDS)))
    fence = idempotency.Fence(api, "app", "k1", "hash", mode)
    return fence.commit(stored, Fields(hook_url=None, priority=3, key="app"), batch=True), discarded


def test_an_unanswered_commit_that_landed_is_queued():
    from uvrd.outcomes import Queued

    outcomes, discarded = unanswered(FakeMode(), landed=True)
    assert outcomes == [Queued(u) for u in UUIDS] and discarded == []


def test_an_unanswered_commit_that_did_not_land_queues_nothing_and_keeps_nothing():
    from uvrd.outcomes import NotQueued

    outcomes, discarded = unanswered(FakeMode(), landed=False)
    assert outcomes == [NotQueued(u) for u in UUIDS] and len(discarded) == 2


def test_an_unanswered_commit_another_request_fenced_is_a_409():
    import kafka.errors as Errors

    from uvrd.kafka.commit_mode import Fenced

    for mode in (FakeMode(reopen=Fenced("fenced")), FakeMode(last_error=Errors.ProducerFencedError())):
        with pytest.raises(ApiError) as refused:
            unanswered(mode, landed=False)
        assert refused.value.status == 409


def test_an_unanswered_commit_kafka_says_nothing_more_about_is_unconfirmed():
    import kafka.errors as Errors

    from uvrd.outcomes import Unconfirmed

    outcomes, discarded = unanswered(FakeMode(reopen=Errors.KafkaConnectionError("away")), landed=True)
    assert outcomes == [Unconfirmed(u) for u in UUIDS] and discarded == []
