"""Retention, stated: a task's expires_at (its finished_at plus api.result_retention), when it answers
410, what the sweep does with each stored entry, the setting and its old name, and the records that
carry a task's expiry through a compacted topic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from uvrd.boards import status
from uvrd.config import EX_CONFIG, Config, ConfigError
from uvrd.config.files import load
from uvrd.outcomes import Delivered, GaveUp
from uvrd.storage import retention
from uvrd.storage.local import delete_local_files, sweep_local
from uvrd.uploader import webhook
from uvrd.uploader.settlement import delivery_settlement

DAY = 86400.0
FINISHED = "2026-12-01T10:00:00.250+00:00"
FINISHED_AT = datetime(2026, 12, 1, 10, 0, 0, 250000, tzinfo=UTC)
TASK = "0b7c6f1e-5a4d-4c3b-9a2e-1f0e9d8c7b6a"


# -- the arithmetic ------------------------------------------------------------------------------

def test_a_finished_task_expires_its_retention_after_it_finished():
    expiry = retention.expires_at({"finished_at": FINISHED}, 7 * DAY)
    assert expiry == FINISHED_AT + timedelta(days=7)
    assert retention.iso(expiry) == "2026-12-08T10:00:00.250+00:00"
    # The offsets uvrd has written (+00:00, Z, none) all mean UTC; another offset is converted.
    for written in ("2026-12-01T10:00:00.250Z", "2026-12-01T10:00:00.250", "2026-12-01T11:00:00.250+01:00"):
        assert retention.expires_at({"finished_at": written}, 7 * DAY) == expiry
    assert retention.expires_at({"finished_at": FINISHED}, 1.5) == FINISHED_AT + timedelta(seconds=1.5)


@pytest.mark.parametrize("state", [
    {}, {"state": "queued"}, {"state": "processing", "started_at": FINISHED}, {"finished_at": None},
    {"finished_at": ""}, {"finished_at": "yesterday"}, {"finished_at": 1764583200}, {"finished_at": ["x"]},
    {"finished_at": "9999-12-31T23:59:59Z"},  # a forged time past what a time can say: never
])
def test_a_task_that_has_not_finished_or_says_no_readable_time_has_no_expiry(state):
    assert retention.expires_at(state, 7 * DAY) is None
    assert retention.gone(state, 7 * DAY, now=FINISHED_AT.timestamp() + 100 * 365 * DAY) is None


def test_a_task_is_gone_from_its_expiry_on_and_says_when():
    state = {"state": "delivered", "finished_at": FINISHED}
    expiry = (FINISHED_AT + timedelta(seconds=60)).timestamp()
    assert retention.gone(state, 60, now=expiry - 0.001) is None
    gone = retention.gone(state, 60, now=expiry)
    assert gone == retention.Gone("expired", FINISHED_AT + timedelta(seconds=60))
    assert gone.reason_field == "expired_at" and gone.at_iso == "2026-12-01T10:01:00.250+00:00"
    assert gone.sentence(TASK) == (f"task {TASK} is gone: it expired at 2026-12-01T10:01:00.250+00:00, "
                                   "and its stems and input are deleted")


def test_a_task_whose_stems_were_deleted_is_gone_from_then_on_whatever_its_retention():
    state = {"state": "stems_deleted", "finished_at": FINISHED, "stems_deleted_at": "2026-12-01T10:05:00.000+00:00"}
    gone = retention.gone(state, 7 * DAY, now=FINISHED_AT.timestamp())
    assert gone is not None and gone.reason == "deleted" and gone.reason_field == "stems_deleted_at"
    assert gone.at_iso == "2026-12-01T10:05:00.000+00:00"
    assert "were deleted at 2026-12-01T10:05:00.000+00:00 on request" in gone.sentence(TASK)


def test_the_sweep_deletes_a_gone_task_keeps_a_finished_one_and_judges_the_rest_by_age():
    now = FINISHED_AT.timestamp() + 30
    assert retention.verdict(None, 60, now) == retention.BY_AGE  # no such task: an orphan
    assert retention.verdict({"state": "queued"}, 60, now) == retention.BY_AGE
    assert retention.verdict({"state": "failed", "finished_at": FINISHED}, 60, now) == retention.KEEP
    assert retention.verdict({"state": "failed", "finished_at": FINISHED}, 20, now) == retention.DELETE
    assert retention.verdict({"state": "stems_deleted", "finished_at": FINISHED,
                              "stems_deleted_at": FINISHED}, 60, now) == retention.DELETE


def test_entries_are_named_after_their_task_as_the_api_and_processor_name_them():
    assert retention.input_task(f"{TASK}.wav") == TASK and retention.input_task(f"{TASK}.m4a") == TASK
    for name in (TASK, f"{TASK}.", f"{TASK}.tar.gz!", ".upload-123", f".{TASK}.wav", f"{TASK}.toolongext"):
        assert retention.input_task(name) is None, name
    assert retention.stems_task(TASK) == TASK
    assert retention.stems_task(".attempts") is None and retention.stems_task(f".input-{TASK}-x") is None


# -- the sweep -----------------------------------------------------------------------------------

def _aged(path, seconds_old: float, now: float):
    os.utime(path, (now - seconds_old, now - seconds_old))
    return path


def test_the_sweep_goes_by_each_tasks_expiry_and_by_age_for_what_no_task_claims(tmp_path):
    config = _config(tmp_path, result_retention=100, spool_retention=1000)
    out, spool = config.processor.output_dir, config.processor.spool_dir
    now = 1_800_000_000.0
    expired, kept, unknown, young = (f"{n}0000000-0000-4000-8000-000000000000" for n in "1234")
    finished = {expired: {"state": "delivered", "finished_at": retention.iso(datetime.fromtimestamp(now - 101, UTC))},
                kept: {"state": "failed", "finished_at": retention.iso(datetime.fromtimestamp(now - 99, UTC))}}
    for task_uuid in (expired, kept, unknown, young):
        (out / task_uuid).mkdir(parents=True)
        (out / task_uuid / "vocals.wav").write_bytes(b"RIFF")
        (spool / f"{task_uuid}.wav").write_bytes(b"RIFF")
    (out / ".attempts").mkdir()
    # Ages, set on the files: a fresh expired task's files, an old kept task's, an old orphan's.
    _aged(out / expired, 1, now), _aged(spool / f"{expired}.wav", 1, now)
    _aged(out / kept, 5000, now), _aged(spool / f"{kept}.wav", 5000, now)
    _aged(out / unknown, 101, now), _aged(spool / f"{unknown}.wav", 1001, now)
    _aged(out / young, 99, now), _aged(spool / f"{young}.wav", 999, now)

    def judge(task_uuid: str) -> retention.Verdict:
        return retention.verdict(finished.get(task_uuid), 100, now)
    assert sweep_local(config, now, judge) == 4
    assert sorted(os.listdir(out)) == sorted([".attempts", kept, young])
    assert sorted(os.listdir(spool)) == sorted([f"{kept}.wav", f"{young}.wav"])


def test_without_a_judge_age_alone_decides_as_before(tmp_path):
    config = _config(tmp_path, result_retention=100, spool_retention=1000)
    now = 1_800_000_000.0
    (config.processor.output_dir / TASK).mkdir(parents=True)
    _aged(config.processor.output_dir / TASK, 101, now)
    assert sweep_local(config, now) == 1


def test_a_tasks_files_are_deleted_at_once_by_name_and_nothing_else(tmp_path):
    config = _config(tmp_path)
    out, spool = config.processor.output_dir, config.processor.spool_dir
    other = "1" + TASK[1:]
    for task_uuid in (TASK, other):
        (out / task_uuid).mkdir(parents=True)
        (out / task_uuid / "vocals.wav").write_bytes(b"RIFF")
        (spool / f"{task_uuid}.flac").write_bytes(b"fLaC")
    assert delete_local_files(config, TASK) == 2
    assert os.listdir(out) == [other] and os.listdir(spool) == [f"{other}.flac"]
    assert delete_local_files(config, TASK) == 0, "asking again deletes nothing and is no error"
    assert delete_local_files(config, "../spool") == 0 and delete_local_files(config, ".") == 0


def _config(tmp_path, **retentions) -> Config:
    spool, out = tmp_path / "spool", tmp_path / "output"
    spool.mkdir(exist_ok=True)
    out.mkdir(exist_ok=True)
    text = f"[processor]\nspool_dir = '{spool}'\noutput_dir = '{out}'\n"
    if "result_retention" in retentions:
        text += f"[api]\nresult_retention = {retentions['result_retention']}\n"
    if "spool_retention" in retentions:
        text += f"[uploader]\nspool_retention = {retentions['spool_retention']}\n"
    path = tmp_path / "uvrd.toml"
    path.write_text(text)
    return load(path, environ={})


# -- the setting ---------------------------------------------------------------------------------

def _load(tmp_path, text: str, environ: dict | None = None) -> Config:
    path = tmp_path / "uvrd.toml"
    path.write_text(text)
    return load(path, environ=environ or {})


def test_result_retention_is_a_week_by_default_and_takes_seconds(tmp_path):
    assert _load(tmp_path, "").api.result_retention == 7 * DAY
    assert _load(tmp_path, "[api]\nresult_retention = 2\n").api.result_retention == 2.0
    assert _load(tmp_path, "", {"UVRD_API_RESULT_RETENTION": "1.5"}).api.result_retention == 1.5


@pytest.mark.parametrize("text, environ, words", [
    ("[api]\nresult_retention = 0\n", {}, "api.result_retention must be 1 to 315360000 seconds"),
    ("[api]\nresult_retention = -3600\n", {}, "api.result_retention must be 1 to"),
    ("[api]\nresult_retention = 0.5\n", {}, "api.result_retention must be 1 to"),
    ("[api]\nresult_retention = 1e12\n", {}, "api.result_retention must be 1 to"),
    ("[api]\nresult_retention = 'a week'\n", {}, "api.result_retention must be a number"),
    ("[api]\nresult_retention = true\n", {}, "api.result_retention must be a number"),
    ("", {"UVRD_API_RESULT_RETENTION": "nan"}, "api.result_retention must be 1 to"),
    ("", {"UVRD_API_RESULT_RETENTION": "7d"}, "UVRD_API_RESULT_RETENTION must be a number"),
    ("[uploader]\nretention = -1\n", {}, "api.result_retention must be 1 to"),
    ("[uploader]\nretention = 60\n[api]\nresult_retention = 60\n", {},
     "uploader.retention and api.result_retention are the same setting; keep only api.result_retention"),
])
def test_a_bad_result_retention_names_the_setting(tmp_path, text, environ, words):
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text, environ)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_the_old_name_uploader_retention_still_works_with_a_warning(tmp_path):
    c = _load(tmp_path, "[uploader]\nretention = 3600\n")
    assert c.api.result_retention == 3600.0
    assert c.deprecated == ("uploader.retention is deprecated: call it api.result_retention",)
    from_env = _load(tmp_path, "", {"UVRD_UPLOADER_RETENTION": "120"})
    assert from_env.api.result_retention == 120.0
    assert from_env.deprecated == ("UVRD_UPLOADER_RETENTION is deprecated: call it api.result_retention",)
    assert _load(tmp_path, "[api]\nresult_retention = 60\n").deprecated == ()


def test_a_bad_result_retention_stops_a_daemon_with_status_78(tmp_path):
    path = tmp_path / "uvrd.toml"
    path.write_text("[api]\nresult_retention = 0\n")
    proc = subprocess.run([sys.executable, "-m", "uvrd", "uploader", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EX_CONFIG
    assert proc.stderr.count("\n") == 1 and "api.result_retention must be" in proc.stderr


# -- the records ---------------------------------------------------------------------------------

def test_a_stems_deleted_record_carries_the_whole_state_but_the_stems_and_outranks_every_other():
    merged = {"task_uuid": TASK, "state": "delivered", "outcome": "succeeded", "key": "team-a",
              "submitted_at": "s", "finished_at": FINISHED, "stems": {"vocals": "/o/v.wav"}, "progress": 1.0,
              "filename": "song.flac", "updated_at": "u"}
    rec = status.stems_deleted_record("t.status", merged, "2026-12-02T00:00:00.000+00:00")
    value = json.loads(rec.value)
    assert rec.key == TASK.encode()
    assert {k: v for k, v in value.items() if k != "updated_at"} == {
        "task_uuid": TASK, "state": "stems_deleted", "outcome": "succeeded", "key": "team-a", "submitted_at": "s",
        "finished_at": FINISHED, "filename": "song.flac", "stems_deleted_at": "2026-12-02T00:00:00.000+00:00"}
    # A late delivery record does not bring the task back.
    later = status.merge(value, {"task_uuid": TASK, "state": "delivered", "delivered_at": "d"})
    assert later["state"] == "stems_deleted" and retention.gone(later, 7 * DAY, 0) is not None


def test_a_delivery_record_says_whose_task_it_is_and_when_it_finished_so_compaction_keeps_its_expiry():
    result = {"task_uuid": TASK, "success": True, "key": "team-a", "submitted_at": "s", "finished_at": FINISHED,
              "stems": {"vocals": "/o/v.wav"}}
    for outcome in (Delivered(attempts=1, status=200), GaveUp(8, "HTTP 500", "status")):
        settled = delivery_settlement(_topics(), _Record(), TASK, outcome, 0, result)
        [record] = [json.loads(r.value) for r in settled.records if r.topic == "t.status"]
        assert record["key"] == "team-a" and record["finished_at"] == FINISHED and record["submitted_at"] == "s"
        assert "stems" not in record
        assert retention.expires_at(record, 7 * DAY) == FINISHED_AT + timedelta(days=7)


def test_the_webhook_says_when_the_stems_go():
    result = {"task_uuid": TASK, "success": True, "finished_at": FINISHED, "stems": {}}
    assert json.loads(webhook.body(result, None, 7 * DAY))["expires_at"] == "2026-12-08T10:00:00.250+00:00"
    assert json.loads(webhook.body(result, None))["expires_at"] is None
    assert json.loads(webhook.body({**result, "finished_at": "garbled"}, None, 7 * DAY))["expires_at"] is None


class _Record:
    topic, partition, offset, key, value, headers = "t.results", 0, 7, TASK.encode(), b"{}", []


def _topics():
    from uvrd.config import TopicsConfig

    return TopicsConfig(status="t.status", dead_letter="t.dlq", results="t.results")
