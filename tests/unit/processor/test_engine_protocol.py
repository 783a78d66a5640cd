"""The processor's side of the engine protocol, against a scripted child: a real process and pipe
speaking the typed messages, so each answer (and each wrong one) is checked without a model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from uvrd.processor import device_gate, engine_child, progress_meter
from uvrd.processor.engine import Engine, EngineDied, EngineSettings
from uvrd.processor.engine_protocol import (Fatal, Job, JobCancelled, JobFailed, Loaded, NoSpace, Progress, Separated,
                                            Warming)

# The "slow" job's steps, 0.05 s each: long enough (2 s) that a cancellation sent at its first progress
# lands before its end, on a busy machine too.
SLOW_STEPS = 40


def scripted_child(conn, heartbeat, settings: EngineSettings, cancel=None) -> None:
    """Plays the engine child: settings.models[0] names the script."""
    script = settings.models[0]
    if script == "unknown-model":
        conn.send(Fatal("could not load model 'x': not in the catalogue", True))
        return
    if script == "dies-loading":
        raise SystemExit(3)
    conn.send(Warming({"model": script}))
    if script == "on-a-gpu":  # (used, total) bytes of its device, after loading and after each job
        conn.send(Loaded({"model": script, "device": "cuda:0", "model_load_s": 0.01, "gpu_memory": (3, 10)}))
    else:
        conn.send(Loaded({"model": script, "device": "cpu", "model_load_s": 0.01}))
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job.task_uuid == "slow":  # SLOW_STEPS steps, each a progress and a cancellation point
            for step in range(1, SLOW_STEPS + 1):
                time.sleep(0.05)  # the job's work: a cancellation lands while it runs
                if cancel.value == job.number:
                    conn.send(JobCancelled())
                    break
                conn.send(Progress(step / SLOW_STEPS, f"step {step}"))
            else:
                conn.send(Separated({}, 0.5))
            continue
        answer = {"ok": Separated({"vocals": f"{job.workdir}/vocals.wav"}, 0.5, 2.0,
                                  (5, 10) if script == "on-a-gpu" else None),
                  "bad": JobFailed("input is not audio"), "full": NoSpace("No space left on device"),
                  "confused": Loaded({}), "dies": None}[job.task_uuid]
        if answer is None:
            raise SystemExit(9)
        conn.send(answer)


def engine(script: str, tmp_path) -> Engine:
    e = Engine(EngineSettings(str(tmp_path), str(tmp_path), (script,), "wav", 1024, 256, 1), child=scripted_child)
    e.start()
    return e


def ready(e: Engine, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if e.poll_ready(0.5):
            return True
    return False


def answer(e: Engine, task: str, tmp_path, within: float = 30.0):
    e.submit(Job(task, "in.wav", "m", "wav", str(tmp_path / task)))
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (got := e.poll_result(0.5)) is not None:
            return got
    raise AssertionError("no answer")


def test_warming_then_loaded_makes_it_ready_with_what_the_child_said(tmp_path):
    e = engine("m", tmp_path)
    try:
        assert ready(e) and e.load_info == {"model": "m", "device": "cpu", "model_load_s": 0.01}
        assert not e.warming
    finally:
        e.close()


def test_each_job_answer_comes_back_as_its_type(tmp_path):
    e = engine("m", tmp_path)
    try:
        assert ready(e)
        assert answer(e, "ok", tmp_path) == Separated({"vocals": f"{tmp_path}/ok/vocals.wav"}, 0.5, 2.0)
        assert answer(e, "bad", tmp_path) == JobFailed("input is not audio")
        assert answer(e, "full", tmp_path) == NoSpace("No space left on device")
    finally:
        e.close()


def test_a_fatal_load_says_whether_a_restart_could_mend_it(tmp_path):
    e = engine("unknown-model", tmp_path)
    try:
        with pytest.raises(EngineDied) as died:
            ready(e)
        assert died.value.fatal_config and "not in the catalogue" in str(died.value)
    finally:
        e.close()


def test_a_child_that_dies_is_reported_with_its_exit_status(tmp_path):
    e = engine("dies-loading", tmp_path)
    try:
        with pytest.raises(EngineDied, match="exited with status 3"):
            ready(e)
    finally:
        e.close()


def test_an_answer_out_of_turn_or_a_death_mid_job_is_a_dead_engine(tmp_path):
    e = engine("m", tmp_path)
    try:
        assert ready(e)
        with pytest.raises(EngineDied, match="said Loaded while separating"):
            answer(e, "confused", tmp_path)
        with pytest.raises(EngineDied, match="exited with status 9"):
            answer(e, "dies", tmp_path)
    finally:
        e.close()


def test_progress_is_kept_while_the_job_runs_and_the_outcome_still_comes(tmp_path):
    e = engine("m", tmp_path)
    try:
        assert ready(e)
        e.submit(Job("slow", "in.wav", "m", "wav", str(tmp_path / "slow")))
        seen = []
        while (got := e.poll_result(0.5)) is None:
            if e.progress is not None and (not seen or seen[-1] != e.progress):
                seen.append(e.progress)
        assert got == Separated({}, 0.5)
        assert seen and seen[-1] == Progress(1.0, f"step {SLOW_STEPS}")
        assert [p.fraction for p in seen] == sorted(p.fraction for p in seen)
    finally:
        e.close()


def test_a_cancelled_job_stops_at_its_next_step_and_the_same_child_serves_the_next(tmp_path):
    e = engine("m", tmp_path)
    try:
        assert ready(e)
        pid = e.pid
        e.submit(Job("slow", "in.wav", "m", "wav", str(tmp_path / "slow")))
        while e.progress is None:
            assert e.poll_result(0.5) is None
        e.cancel()
        deadline = time.monotonic() + 60  # a bound that ends the test on an engine that never answers
        while (got := e.poll_result(0.5)) is None:
            assert time.monotonic() < deadline, "no answer to the cancellation"
        assert got == JobCancelled() and e.progress.fraction < 1.0
        # The request named that job only: the next one runs to its end, in the same child.
        assert answer(e, "slow", tmp_path) == Separated({}, 0.5)
        assert e.pid == pid and e.alive()
    finally:
        e.close()


def test_the_gpu_memory_the_child_reports_is_what_the_metrics_show(tmp_path):
    used = {"device": "cuda:0"}
    e = engine("on-a-gpu", tmp_path)
    try:
        assert ready(e)
        assert REGISTRY.get_sample_value("uvrd_gpu_memory_used_bytes", used) == 3
        assert REGISTRY.get_sample_value("uvrd_gpu_memory_total_bytes", used) == 10
        assert isinstance(answer(e, "ok", tmp_path), Separated)
        assert REGISTRY.get_sample_value("uvrd_gpu_memory_used_bytes", used) == 5
    finally:
        e.close()


def test_each_restart_is_counted_by_its_cause(tmp_path):
    def restarts() -> float:
        return REGISTRY.get_sample_value("uvrd_engine_restarts_total", {"cause": "died_while_idle"}) or 0.0

    e = engine("ok", tmp_path)
    try:
        assert ready(e)
        before = restarts()
        e.restart("died_while_idle")
        assert ready(e) and restarts() == before + 1
    finally:
        e.close()


# -- two jobs in the child at once (the pipeline sends the next one ahead, device_gate.py) ----------
def serving_child(conn, heartbeat, settings: EngineSettings, cancel=None) -> None:
    """The real child's job loop (engine_child.serve_jobs: each job on a thread of its own, through the
    gate) around scripted separations: ``slow-…`` is a forward of SLOW_STEPS steps, ``quick-…`` has
    none (its whole job holds the child's turn), ``dies-…`` ends the child."""
    send = engine_child.Sender(conn)
    send(Loaded({"model": "m", "device": "cpu", "model_load_s": 0.01}))
    meters = progress_meter.Meters(progress_meter.Meter(send, lambda: False))
    gate = device_gate.Gate()

    def separate(job: Job) -> dict[str, str]:
        if job.task_uuid.startswith("dies"):
            os._exit(9)
        if job.task_uuid.startswith("slow"):
            with gate.device():
                for _ in meters.tqdm(range(SLOW_STEPS)):
                    time.sleep(0.05)  # the forward's work: the job sent ahead runs meanwhile
        path = os.path.join(job.workdir, "vocals.wav")
        Path(path).write_text(job.task_uuid)
        return {"vocals": path}

    engine_child.serve_jobs(conn, send, meters, engine_child.Cancellations(cancel), separate, gate)


def served(tmp_path) -> Engine:
    e = Engine(EngineSettings(str(tmp_path), str(tmp_path), ("m",), "wav", 1024, 256, 1), child=serving_child)
    e.start()
    assert ready(e)
    return e


def outcome(e: Engine, within: float = 60.0):
    deadline = time.monotonic() + within  # a bound that ends the test on an engine that never answers
    while (got := e.poll_result(0.5)) is None:
        assert time.monotonic() < deadline, "no answer"
    return got


def job(task: str, tmp_path) -> Job:
    return Job(task, "in.wav", "m", "wav", str(tmp_path / task))


def test_a_job_sent_ahead_is_answered_as_its_own_and_taken_on_in_its_turn(tmp_path):
    """The job sent ahead has no forward here, so it ends inside the first job's forward, before it:
    its answer waits for its turn, and the first job's wait gets the first job's answer."""
    e = served(tmp_path)
    try:
        e.submit(job("slow-a", tmp_path))
        ahead = e.submit_ahead(job("quick-b", tmp_path))
        first = outcome(e)
        assert isinstance(first, Separated) and first.stems == {"vocals": f"{tmp_path}/slow-a/vocals.wav"}
        assert e.adopt(ahead)
        second = outcome(e)
        assert isinstance(second, Separated) and second.stems == {"vocals": f"{tmp_path}/quick-b/vocals.wav"}
        assert (tmp_path / "quick-b" / "vocals.wav").read_text() == "quick-b"
    finally:
        e.close()


def test_a_job_sent_ahead_then_forgotten_stops_and_its_answer_and_work_directory_go(tmp_path):
    e = served(tmp_path)
    try:
        pid = e.pid
        e.submit(job("slow-a", tmp_path))
        ahead = e.submit_ahead(job("slow-b", tmp_path))
        e.forget(ahead, str(tmp_path / "slow-b"))
        assert not e.adopt(ahead)
        first = outcome(e)
        assert isinstance(first, Separated) and first.stems == {"vocals": f"{tmp_path}/slow-a/vocals.wav"}
        e.submit(job("quick-c", tmp_path))
        # The forgotten job stops at its next step, which may come before or after this job's end:
        # its answer, whenever it comes on the pipe, is dropped, never taken for this job's.
        third = outcome(e)
        assert isinstance(third, Separated) and third.stems == {"vocals": f"{tmp_path}/quick-c/vocals.wav"}
        deadline = time.monotonic() + 60  # a bound that ends the test on a job that never stops
        while (tmp_path / "slow-b").exists():  # removed once its answer is read, as the next job's wait reads it
            assert e.poll_result(0.2) is None, "nothing is answered for a job not waited for"
            assert time.monotonic() < deadline, "the forgotten job's work directory is removed"
        assert e.pid == pid and e.alive()
    finally:
        e.close()


def test_a_job_sent_ahead_is_lost_with_a_child_that_dies_and_runs_when_sent_again(tmp_path):
    e = served(tmp_path)
    try:
        e.submit(job("dies-a", tmp_path))
        ahead = e.submit_ahead(job("quick-b", tmp_path))
        with pytest.raises(EngineDied, match="exited with status 9"):
            outcome(e)
        e.restart("run_unfinished")
        assert ready(e)
        assert not e.adopt(ahead), "the job sent ahead died with its child"
        e.submit(job("quick-b", tmp_path))
        got = outcome(e)
        assert isinstance(got, Separated) and got.stems == {"vocals": f"{tmp_path}/quick-b/vocals.wav"}
    finally:
        e.close()
