"""The pipeline's stages (pipeline.py): one job at a time beside the main thread, whose outcome (or
error) the main thread reads when it settles the task."""

import threading

import pytest

from uvrd.processor.pipeline import Stage


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
