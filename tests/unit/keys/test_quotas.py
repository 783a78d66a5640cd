"""A key's quotas: the values a key may have, how they travel in its record, how use is counted
from the status board, and which request each quota refuses (and with what Retry-After)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from uvrd.api import quota_gate
from uvrd.api.errors import ApiError
from uvrd.api.quota_gate import QuotaGate, Use, refusal
from uvrd.boards.status import StatusBoard
from uvrd.config import KafkaConfig
from uvrd.keys import record as keys
from uvrd.keys.record import KeyProblem, Quota
from devtools import tinymodel

NOON = datetime(2026, 12, 6, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("bad", [0, -3, 1.5, "3", True, None.__class__, [2], {"n": 1}, 10**12])
def test_a_quota_is_a_whole_number_within_its_bound(bad):
    for field in keys.QUOTA_FIELDS:
        with pytest.raises(KeyProblem, match=field):
            keys.check_quota({field: bad})


def test_a_quota_change_keeps_what_it_does_not_name_and_null_removes_a_limit():
    base = Quota(max_active=3, audio_seconds_per_day=600)
    assert keys.check_quota({"max_active": 5}, base) == Quota(5, 600)
    assert keys.check_quota({"audio_seconds_per_day": None}, base) == Quota(3, None)
    assert keys.check_quota({}, base) == base
    assert keys.check_quota({"max_active": 1, "audio_seconds_per_day": 10**9}) == Quota(1, 10**9)


def test_a_quota_travels_in_the_key_record_and_survives_revocation():
    key, token = keys.new_key("limited", "submit", "2026-12-06T00:00:00.000+00:00", Quota(max_active=2))
    encoded = json.loads(key.encode())
    assert encoded["quota"] == {"max_active": 2}
    assert keys.parse(key.encode()) == key
    assert key.public()["quota"] == {"max_active": 2, "audio_seconds_per_day": None}
    changed = key.with_quota(Quota(None, 60))
    assert changed.matches(keys.split_token(token)[1])  # the secret is the same key's
    assert keys.parse(changed.encode()).quota == Quota(None, 60)
    assert keys.parse(key.revoke("2026-12-06T01:00:00.000+00:00").encode()).quota == Quota(max_active=2)
    unlimited, _ = keys.new_key("free", "submit", "2026-12-06T00:00:00.000+00:00")
    assert "quota" not in json.loads(unlimited.encode())


def test_a_record_with_a_quota_no_api_writes_keeps_the_key_without_that_limit():
    key, _ = keys.new_key("odd", "submit", "2026-12-06T00:00:00.000+00:00")
    forged = {**json.loads(key.encode()), "quota": {"max_active": -1, "audio_seconds_per_day": 30}}
    parsed = keys.parse(json.dumps(forged).encode())
    assert parsed is not None and parsed.quota == Quota(None, 30)


def board_with(*records: dict) -> StatusBoard:
    board = StatusBoard(KafkaConfig(), "status")
    for value in records:
        board.fold(SimpleNamespace(value=json.dumps(value).encode(), key=value["task_uuid"].encode()))
    return board


def test_use_counts_a_keys_tasks_not_yet_final_and_its_audio_of_the_day():
    today, yesterday = "2026-12-06T08:00:00.000+00:00", "2026-12-05T23:59:59.999+00:00"
    board = board_with(
        {"task_uuid": "a", "state": "queued", "key": "k", "submitted_at": today, "audio_seconds": 30.5},
        {"task_uuid": "b", "state": "queued", "key": "k", "submitted_at": today, "audio_seconds": 10},
        {"task_uuid": "b", "state": "processing", "progress": 0.5},  # a later record without the key
        {"task_uuid": "c", "state": "queued", "key": "k", "submitted_at": today, "audio_seconds": 5},
        {"task_uuid": "c", "state": "delivered"},  # ended today: no longer active, its audio still counts
        {"task_uuid": "d", "state": "queued", "key": "k", "submitted_at": yesterday, "audio_seconds": 100},
        {"task_uuid": "e", "state": "queued", "key": "other", "submitted_at": today, "audio_seconds": 7},
        {"task_uuid": "f", "state": "queued", "key": "k", "submitted_at": today},  # from before lengths
    )
    assert board.usage("k", "2026-12-06") == (4, 45.5)
    assert board.usage("other", "2026-12-06") == (1, 7)
    assert board.usage("nobody", "2026-12-06") == (0, 0)


def test_a_replay_keeps_the_tasks_length_and_does_not_count_it_twice():
    board = board_with(
        {"task_uuid": "a", "state": "queued", "key": "k", "submitted_at": "2026-12-06T08:00:00.000+00:00",
         "audio_seconds": 20},
        {"task_uuid": "a", "state": "failed"},
        {"task_uuid": "a", "state": "queued", "replay": 1},
    )
    assert board.usage("k", "2026-12-06") == (1, 20)


def test_max_active_refuses_the_request_that_would_pass_it_whole():
    quota = Quota(max_active=3)
    assert refusal("k", quota, Use(1, 0), 2, 0, NOON) is None
    refused = refusal("k", quota, Use(1, 0), 3, 0, NOON)
    assert isinstance(refused, ApiError) and refused.status == 429
    assert "max_active" in refused.message and "this request adds 3" in refused.message
    assert refused.headers["Retry-After"] == str(quota_gate.ACTIVE_RETRY_AFTER_S)


def test_audio_seconds_per_day_is_retried_after_midnight_utc():
    quota = Quota(audio_seconds_per_day=100)
    assert refusal("k", quota, Use(0, 60), 1, 40, NOON) is None
    refused = refusal("k", quota, Use(0, 60), 1, 40.5, NOON)
    assert refused is not None and refused.status == 429 and "audio_seconds_per_day" in refused.message
    assert refused.headers["Retry-After"] == str(12 * 3600)
    assert "2026-12-07T00:00:00+00:00" in refused.message
    never = refusal("k", quota, Use(0, 0), 1, 101, NOON)
    assert never is not None and "never accepted" in never.message


def test_a_workers_admissions_count_until_their_tasks_are_on_the_board():
    key, _ = keys.new_key("k", "submit", "2026-12-06T00:00:00.000+00:00", Quota(max_active=2))
    board = board_with()
    backend = SimpleNamespace(board=board, keys=SimpleNamespace(get=lambda name: key))
    gate = QuotaGate()
    with gate.admit(backend, "k", 1, 0), gate.admit(backend, "k", 1, 0):
        with pytest.raises(ApiError) as third, gate.admit(backend, "k", 1, 0):
            pass
        assert third.value.status == 429
    with gate.admit(backend, "k", 2, 0):  # both went without queueing anything: their places are free again
        pass


def test_an_unlimited_or_configured_key_is_never_refused():
    free, _ = keys.new_key("free", "submit", "2026-12-06T00:00:00.000+00:00")
    backend = SimpleNamespace(board=board_with(), keys=SimpleNamespace(get=lambda name: free if name == "free" else None))
    with QuotaGate().admit(backend, "free", 10**6, 10**9):
        pass
    with QuotaGate().admit(backend, "config-token-1", 10**6, 10**9):
        pass


def test_an_inputs_length_is_read_from_its_header(tmp_path):
    song = tinymodel.write_sample(tmp_path / "song.wav", seconds=3)
    assert quota_gate.counted_seconds(str(song), 43200) == pytest.approx(3.0)
    assert quota_gate.counted_seconds(str(song), 2) == 2  # never more than a processor would separate
    noise = tmp_path / "noise.bin"
    noise.write_bytes(b"\x00not audio" * 100)
    assert quota_gate.counted_seconds(str(noise), 43200) == 43200  # unknown: the most it could be
