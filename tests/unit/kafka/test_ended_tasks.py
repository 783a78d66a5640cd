"""The processor's mark against running a task twice (fair share): a task has ended once its result's
status record is on the status topic, for its replay cycle or a later one; nothing else counts."""

import json
from types import SimpleNamespace

from uvrd.boards.ended_tasks import EndedTasks, Prior
from uvrd.config import KafkaConfig

UUID = "11111111-1111-4111-8111-111111111111"


def fold(board: EndedTasks, key: str, value: dict | None) -> None:
    board.fold(SimpleNamespace(key=key.encode(), value=None if value is None else json.dumps(value).encode()))


def test_only_a_result_s_status_ends_a_task():
    board = EndedTasks(KafkaConfig(), "uvrd.status")  # never started: records are folded by hand
    fold(board, UUID, {"task_uuid": UUID, "state": "queued"})
    fold(board, f"{UUID}/progress", {"task_uuid": UUID, "state": "processing", "step": "started"})
    fold(board, f"{UUID}/progress", None)
    fold(board, "x", {"state": "succeeded"})  # no task_uuid: no record of uvrd's
    assert not board.ended(UUID, 0)
    fold(board, UUID, {"task_uuid": UUID, "state": "succeeded"})
    assert board.ended(UUID, 0)


def test_a_replay_is_a_new_cycle_that_has_not_ended_until_its_own_result():
    board = EndedTasks(KafkaConfig(), "uvrd.status")
    fold(board, UUID, {"task_uuid": UUID, "state": "failed"})
    fold(board, UUID, {"task_uuid": UUID, "state": "queued", "replay": 1})
    assert board.ended(UUID, 0) and not board.ended(UUID, 1), "the replay runs"
    fold(board, UUID, {"task_uuid": UUID, "state": "delivered", "replay": 1})
    assert board.ended(UUID, 1)
    fold(board, UUID, {"task_uuid": UUID, "state": "failed"})  # a late record of the first cycle
    assert board.ended(UUID, 1), "an earlier cycle's record takes nothing back"


def test_what_the_board_says_before_a_task_runs():
    board = EndedTasks(KafkaConfig(), "uvrd.status")
    assert board.prior(UUID, 0, read_through_end=True) is Prior.NOT_ENDED
    assert board.prior(UUID, 0, read_through_end=False) is Prior.UNKNOWN, "not read through: it may have ended"
    fold(board, UUID, {"task_uuid": UUID, "state": "cancelled"})
    assert board.prior(UUID, 0, read_through_end=False) is Prior.ENDED
