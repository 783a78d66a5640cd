"""Where a task stands: records from several writers merge, a state never goes back, and a stem a
record names that could not be served is left out."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import structlog
from flask import Flask

from uvrd.api import errors, query
from uvrd.api.auth import Authenticator
from uvrd.api.context import EXTENSION, ApiContext
from uvrd.boards import status
from uvrd.config import Config, KafkaConfig


def test_a_later_state_overrides_and_keeps_what_earlier_writers_knew():
    merged = status.merge({"state": "queued", "submitted_at": "a"}, {"state": "processing", "worker": "w"})
    assert merged == {"state": "processing", "submitted_at": "a", "worker": "w"}


def test_a_late_older_state_only_fills_gaps():
    current = {"state": "succeeded", "finished_at": "f"}
    merged = status.merge(current, {"state": "processing", "worker": "w", "finished_at": "stale"})
    assert merged == {"state": "succeeded", "finished_at": "f", "worker": "w"}


def test_the_first_record_is_taken_as_it_is():
    assert status.merge(None, {"state": "queued"}) == {"state": "queued"}


def test_a_replay_starts_the_next_cycle_keeping_only_when_the_task_was_submitted():
    failed = {"state": "failed", "submitted_at": "s", "error_message": "no input", "finished_at": "f"}
    merged = status.merge(failed, {"state": "queued", "replay": 1, "replayed_at": "r"})
    assert merged == {"state": "queued", "replay": 1, "replayed_at": "r", "submitted_at": "s"}
    # Within the cycle the usual order holds; a late record of the earlier cycle only fills gaps.
    delivered = status.merge(merged, {"state": "delivered", "replay": 1})
    delivered = status.merge(delivered, {"state": "succeeded", "replay": 1})
    assert delivered["state"] == "delivered"
    assert status.merge(delivered, {"state": "delivery_failed", "delivery_error": "old"})["state"] == "delivered"


def test_a_replay_keeps_who_submitted_the_task():
    failed = {"state": "failed", "submitted_at": "s", "key": "team-a", "filename": "song.wav"}
    merged = status.merge(failed, {"state": "queued", "replay": 1})
    assert (merged["key"], merged["filename"]) == ("team-a", "song.wav")


def test_a_list_is_the_newest_visible_tasks_a_page_at_a_time():
    board = status.StatusBoard(KafkaConfig(), "uvrd.status")  # never started: records are folded by hand
    for i, (uuid, key) in enumerate([("t1", "a"), ("t2", "b"), ("t3", "a"), ("t4", "a"), ("t5", "a")]):
        board.apply({"task_uuid": uuid, "state": "queued", "key": key, "submitted_at": f"2026-12-0{i + 1}"})
    board.apply({"task_uuid": "t6", "state": "queued", "key": "a", "submitted_at": "2026-12-05"})  # a tie: by uuid
    mine = lambda state: state.get("key") == "a"  # noqa: E731
    first, more = board.newest(mine, 2)
    assert [t["task_uuid"] for t in first] == ["t6", "t5"] and more
    second, more = board.newest(mine, 2, (first[-1]["submitted_at"], first[-1]["task_uuid"]))
    assert [t["task_uuid"] for t in second] == ["t4", "t3"] and more
    last, more = board.newest(mine, 2, (second[-1]["submitted_at"], second[-1]["task_uuid"]))
    assert [t["task_uuid"] for t in last] == ["t1"] and not more


# -- a status record is input like any other ---------------------------------------------------
# The status topic is written by uvrd, but whoever can write to the broker can write a record: a stem
# reference no file system or bucket can use must not reach the code that opens it.

TASK = "0b7d7a8e-7c3e-4c1a-9d0e-1f2a3b4c5d6e"
UNUSABLE = ["/out/vocals\u0000.flac", "", "/out/\ud800.flac", "/" + "x" * 5000, 7, None]


def board_with(stems: dict) -> status.StatusBoard:
    board = status.StatusBoard(KafkaConfig(), "uvrd.status")  # never started: records are folded by hand
    value = json.dumps({"task_uuid": TASK, "state": "succeeded", "stems": stems}).encode()
    board.fold(SimpleNamespace(value=value))
    return board


@pytest.mark.parametrize("reference", UNUSABLE)
def test_a_stem_no_file_system_can_use_is_left_out_of_the_task_with_a_warning(reference):
    with structlog.testing.capture_logs() as logs:
        board = board_with({"vocals": reference, "instrumental": "/out/instrumental.flac"})
    assert board.get(TASK)["stems"] == {"instrumental": "/out/instrumental.flac"}
    assert [(e["log_level"], e["task_uuid"], e["stem"]) for e in logs] == [("warning", TASK, "vocals")]


@pytest.mark.parametrize("name", ["", "vocals\u0000", "vocals\n", "a" * 200, "\ud800"])
def test_a_stem_name_no_link_can_carry_is_left_out_too(name):
    board = board_with({name: "/out/a.flac", "vocals": "/out/vocals.flac"})
    assert board.get(TASK)["stems"] == {"vocals": "/out/vocals.flac"}


def test_a_record_whose_stems_are_no_object_keeps_none():
    board = board_with(["/out/vocals.flac"])
    assert "stems" not in board.get(TASK)


def test_downloading_a_stem_whose_recorded_path_holds_nul_is_a_404_not_a_crash(tmp_path):
    config = Config()
    config = dataclasses.replace(config, processor=dataclasses.replace(config.processor, output_dir=tmp_path))
    (tmp_path / "instrumental.flac").write_bytes(b"fLaC")
    app = Flask("uvrd.api")
    errors.register(app, 1 << 20)
    app.register_blueprint(query.blueprint)
    board = board_with({"vocals": f"{tmp_path}/vocals\u0000.flac", "instrumental": f"{tmp_path}/instrumental.flac"})
    app.extensions[EXTENSION] = ApiContext(config, Authenticator(("token",), (), "secret"), None,
                                           SimpleNamespace(board=board), SimpleNamespace(name="local"))
    client = app.test_client()
    auth = {"Authorization": "Bearer token"}
    refused = client.get(f"/v1/tasks/{TASK}/stems/vocals", headers=auth)
    assert refused.status_code == 404 and refused.json == {"error": f"task {TASK} has no stem 'vocals'"}
    served = client.get(f"/v1/tasks/{TASK}/stems/instrumental", headers=auth)
    assert served.status_code == 200 and served.data == b"fLaC"
