"""The pipeline's stages (pipeline.py): one job at a time beside the main thread, whose outcome (or
error) the main thread reads when it settles the task."""

import json
import threading
from collections import namedtuple
from types import SimpleNamespace

import pytest

from uvrd.config import ProcessorConfig
from uvrd.processor import pipeline_turns
from uvrd.processor.accept import Accepted, accept
from uvrd.processor.engine_protocol import Separated
from uvrd.processor.pipeline import Behind, Stage
from uvrd.processor.pipeline_turns import PipelineTurns

Record = namedtuple("Record", "topic partition offset key value")


def record(offset: int) -> Record:
    body = {"task_uuid": f"0b7e4f5c-6a43-4b8e-9a39-0f3c2a1d9e1{offset}", "audio_path": "/spool/x.wav",
            "hook_url": None}
    return Record("t", 0, offset, None, json.dumps(body).encode())


def test_a_stage_runs_its_job_beside_the_caller_and_hands_back_the_result():
    release = threading.Event()
    stage: Stage[str] = Stage("store")
    future = stage.start(lambda: release.wait(30) and "stored")
    assert stage.busy and not future.done(), "the caller goes on while the job runs"
    release.set()
    assert future.result(30) == "stored"
    assert not stage.busy


def test_a_stage_holds_one_job_at_most():
    release = threading.Event()
    stage: Stage[bool] = Stage("fetch")
    stage.start(lambda: release.wait(30))
    with pytest.raises(RuntimeError, match="already has a job"):
        stage.start(lambda: True)
    release.set()


def test_a_failed_job_hands_its_error_to_the_main_thread():
    stage: Stage[None] = Stage("fetch")

    def fail() -> None:
        raise OSError("bucket unreachable")
    future = stage.start(fail)
    assert isinstance(future.exception(30), OSError), "the main thread decides what it means"


def test_a_stage_runs_niced_and_leaves_the_caller_as_it_was():
    import os

    from uvrd.processor.pipeline import STAGE_NICENESS

    before = os.getpriority(os.PRIO_PROCESS, 0)
    stage: Stage[int] = Stage("fetch")
    niceness = stage.start(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id())).result(30)
    assert niceness == min(19, before + STAGE_NICENESS) or niceness == STAGE_NICENESS
    assert os.getpriority(os.PRIO_PROCESS, 0) == before, "the main thread is not niced"


def test_a_task_taken_while_an_abandoned_fetch_still_runs_is_fetched_in_its_turn():
    """The fetch of a task abandoned ahead of the model (a rebalance, a cancellation) may still run,
    niced, on a busy host when the next task is taken: r18 of `make test` saw the processor exit with
    "the fetch stage already has a job".  The next task is taken all the same; its input is fetched
    in its turn, as in the sequential order, and the stage keeps one job at most."""
    class Unreachable(OSError):
        pass

    def fetch_input(task):
        raise Unreachable(task.task_uuid)
    host = SimpleNamespace(priorities=SimpleNamespace(served=lambda topic: None), claim=lambda record: "claim",
                           cfg=ProcessorConfig(model="a.onnx"), storage=SimpleNamespace(name="local",
                                                                                        fetch_input=fetch_input),
                           cancellations=SimpleNamespace(requested_at=lambda task_uuid: None))
    turns = PipelineTurns(host)  # type: ignore[arg-type]
    release = threading.Event()
    abandoned = turns.fetching.start(lambda: release.wait(30))

    taken = turns._take(record(1))
    assert isinstance(taken.accepted, Accepted) and taken.fetched is None, "fetched by the main thread in its turn"
    release.set()
    abandoned.result(30)
    second = turns._take(record(2)).fetched
    assert second is not None, "a free stage fetches ahead again"
    assert isinstance(second.exception(30), Unreachable), "the stage ran this task's fetch"


def test_a_task_separated_as_the_drain_window_ends_with_a_store_still_running_is_left_for_redelivery(tmp_path):
    """The window ends while the task before is still being stored: that one is left uncommitted, and
    the task separated just then goes the same way (requeued, its claim released, its stems removed)
    instead of a second job for the store stage ending the processor mid-stop."""
    released, requeued = [], []
    host = SimpleNamespace(release=released.append,
                           runtime=SimpleNamespace(wait=lambda until, through_drain: SimpleNamespace(done=False)))
    turns = PipelineTurns(host)  # type: ignore[arg-type]

    def separated(name: str) -> Separated:
        workdir = tmp_path / name
        workdir.mkdir()
        (workdir / "vocals.wav").write_bytes(b"RIFF")
        return Separated({"vocals": str(workdir / "vocals.wav")}, seconds=1.0)

    def accepted(offset: int) -> Accepted:
        taken = accept(record(offset), ProcessorConfig(model="a.onnx"), "local")
        assert isinstance(taken, Accepted)
        return taken

    events = SimpleNamespace(requeued=requeued.append)
    release = threading.Event()
    before = Behind(record(1), "claim-1", accepted(1), separated("one"), "t0", events, {})
    before.stored = turns.storing.start(lambda: release.wait(30) and {})
    turns.behind = before

    turns.hand_on(record(2), "claim-2", accepted(2), separated("two"), "t1", events)

    assert released == ["claim-1", "claim-2"] and turns.behind is None
    assert requeued == [pipeline_turns.DRAIN_ENDED_IN_STORE] * 2
    assert not (tmp_path / "two").exists(), "its stems are not left behind"
    release.set()
