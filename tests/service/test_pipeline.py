"""The pipelined processor (``processor.pipeline = true``): the next task is taken while one is in the
model, and every task still ends in exactly one result, committed in offset order.

The engine child is scripted (scripted_engine.py): ``slow-Ns`` inputs stay in the "model" long enough
for the next task to be taken ahead.  That the next task was taken is read from the daemon (its
``ahead``), everything else from outside: committed offsets, the result and status topics.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
from kafka import KafkaConsumer

import scripted_engine
from support import fill, small_filesystem, wait_until
from devtools import tinymodel
from uvrd.boards import cancellations
from uvrd.broker.group_settings import GROUP_SETTINGS
from uvrd.processor import decoded_input, ffmpeg, stem_encoding
from uvrd.processor.daemon import Processor
from uvrd.processor.engine import Engine, EngineSettings, Job
from uvrd.processor.engine_protocol import Separated


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory) -> Path:
    return tinymodel.write_sample(tmp_path_factory.mktemp("short") / "short.wav", seconds=1)


def pipelined(stack, name: str | None = None):
    config = stack.write_config(f"pipeline-{name or 'one'}.toml", pipeline=True)
    return stack.in_process(Processor, config=config, name=name, engine=scripted_engine.engine).wait_ready()


def send(stack, kafka, audio: Path, behaviour: str | None = None) -> dict:
    name = scripted_engine.input_name(behaviour) if behaviour else None
    task = stack.task(stack.spool_copy(audio, name))
    kafka.send(stack.tasks, task)
    return task


def taken_ahead(p, task: dict) -> bool:
    ahead = p.handler.pipeline.ahead
    return ahead is not None and getattr(ahead.accepted, "task", None) is not None and \
        ahead.accepted.task.task_uuid == task["task_uuid"]



def sent_ahead(p, task: dict) -> bool:
    """Whether *task*'s job is in the engine child already, sent while the task before is in the model."""
    ahead = p.handler.separation.ahead
    return ahead is not None and ahead.task_uuid == task["task_uuid"]


def work_directories(stack, task: dict) -> list[Path]:
    return list(stack.output.glob(f".work-{task['task_uuid']}-*"))


def outcomes(kafka, stack) -> dict[str, list[dict]]:
    """Each task's results, by task_uuid."""
    by_task: dict[str, list[dict]] = {}
    for r in kafka.results(stack.results):
        by_task.setdefault(r["task_uuid"], []).append(r)
    return by_task


def committed(kafka, stack, n: int, timeout: float = 60) -> None:
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == n, timeout, f"offset {n} committed")


def test_a_queue_drains_through_the_pipeline_one_result_each_in_order(stack, kafka, short_audio):
    p = pipelined(stack)
    tasks = [send(stack, kafka, short_audio, "slow-0.5s") for _ in range(4)]
    committed(kafka, stack, 4)
    results = kafka.results(stack.results)
    assert [r["task_uuid"] for r in results] == [t["task_uuid"] for t in tasks], "one result each, in offset order"
    assert all(r["success"] for r in results)
    assert p.stop() == 0
    assert kafka.results(stack.results) == results, "nothing more after the stop"
    assert not list(stack.output.glob(f"{decoded_input.PREFIX}*")), "each input decoded ahead is removed with it"


def test_a_task_is_committed_while_the_next_one_is_in_the_model(stack, kafka, short_audio):
    """Its stems stored, a task's result goes out while the next task runs, not after it."""
    p = pipelined(stack)
    send(stack, kafka, short_audio)
    second = send(stack, kafka, short_audio, "slow-3s")

    def first_out_while_second_runs() -> bool:
        run = p.handler.separation.run
        return run is not None and run.task_uuid == second["task_uuid"] and \
            kafka.committed(stack.group, stack.tasks).get(0) == 1
    wait_until(first_out_while_second_runs, 60, "the first task committed while the second is in the model")
    committed(kafka, stack, 2)
    assert p.stop() == 0


@pytest.mark.parametrize("sent", [False, True], ids=["taken_ahead", "job_sent_ahead"])
def test_a_stop_commits_the_task_in_the_model_and_leaves_the_one_ahead(stack, kafka, short_audio, sent):
    """The stop comes with the next task taken ahead (its input fetched), or with its job in the engine
    child already (sent ahead): either way it is left uncommitted, never started, with no work
    directory, and the next processor runs it once."""
    first = pipelined(stack, "first")
    in_model = send(stack, kafka, short_audio, "slow-3s")
    ahead = send(stack, kafka, short_audio, "slow-1s" if sent else None)
    if sent:
        wait_until(lambda: sent_ahead(first, ahead), 60, "the second task's job sent while the first is in the model")
    else:
        wait_until(lambda: taken_ahead(first, ahead), 60, "the second task taken while the first is in the model")
    assert first.stop() == 0
    assert kafka.committed(stack.group, stack.tasks).get(0) == 1, "the task in the model committed; not the one ahead"
    assert list(outcomes(kafka, stack)) == [in_model["task_uuid"]]
    assert kafka.runs_started(stack.status, ahead["task_uuid"]) == 0, "the task ahead never had its turn"
    assert work_directories(stack, ahead) == [], "the task ahead leaves no work directory"

    second = pipelined(stack, "second")
    committed(kafka, stack, 2)
    done = outcomes(kafka, stack)
    assert {k: len(v) for k, v in done.items()} == {in_model["task_uuid"]: 1, ahead["task_uuid"]: 1}
    assert all(r["success"] for v in done.values() for r in v)
    assert second.stop() == 0


def test_a_task_cancelled_after_its_job_was_sent_ahead_ends_cancelled_once_in_the_same_engine(stack, kafka,
                                                                                             short_audio):
    p = pipelined(stack)
    pid = p.handler.engine.pid
    in_model = send(stack, kafka, short_audio, "slow-3s")
    ahead = send(stack, kafka, short_audio, "slow-3s")
    wait_until(lambda: sent_ahead(p, ahead), 60, "the second task's job sent while the first is in the model")
    record, _ = cancellations.request(stack.cancellations, ahead["task_uuid"])
    kafka.send(record.topic, record.value, key=record.key)
    after = send(stack, kafka, short_audio)
    committed(kafka, stack, 3)
    done = outcomes(kafka, stack)
    assert {k: len(v) for k, v in done.items()} == {t["task_uuid"]: 1 for t in (in_model, ahead, after)}
    assert done[in_model["task_uuid"]][0]["success"] is True and done[after["task_uuid"]][0]["success"] is True
    assert done[ahead["task_uuid"]][0].get("cancelled") is True
    assert kafka.runs_started(stack.status, ahead["task_uuid"]) == 0
    assert work_directories(stack, ahead) == []
    assert p.handler.engine.pid == pid, "the job sent ahead was stopped in the child, not with it"
    assert p.stop() == 0


def test_a_task_cancelled_while_taken_ahead_ends_cancelled_without_running(stack, kafka, short_audio):
    p = pipelined(stack)
    in_model = send(stack, kafka, short_audio, "slow-3s")
    ahead = send(stack, kafka, short_audio)
    wait_until(lambda: taken_ahead(p, ahead), 60, "the second task taken while the first is in the model")
    record, _ = cancellations.request(stack.cancellations, ahead["task_uuid"])
    kafka.send(record.topic, record.value, key=record.key)
    committed(kafka, stack, 2)
    done = outcomes(kafka, stack)
    assert [len(v) for v in done.values()] == [1, 1]
    assert done[in_model["task_uuid"]][0]["success"] is True
    assert done[ahead["task_uuid"]][0].get("cancelled") is True
    assert kafka.runs_started(stack.status, ahead["task_uuid"]) == 0
    assert p.stop() == 0


def test_a_rebalance_with_a_task_taken_ahead_ends_every_task_once(stack, kafka, short_audio):
    """Another member joins the group, then leaves, while the processor holds one task in the model and
    one taken ahead: whether the partition stayed or went and came back, each task ends in one result.
    (The other member is a bare consumer: two in-process processors would share one resource tracker.)"""
    p = pipelined(stack)
    tasks = [send(stack, kafka, short_audio, "slow-3s"), send(stack, kafka, short_audio)]
    wait_until(lambda: taken_ahead(p, tasks[1]), 60, "the second task taken while the first is in the model")
    generation = p.handler.member.generation()
    other = KafkaConsumer(stack.tasks, bootstrap_servers=stack.bootstrap, group_id=stack.group,
                          enable_auto_commit=False, **GROUP_SETTINGS)
    try:
        def rebalanced() -> bool:
            other.poll(100)  # never committed: what it fetches is not its to settle
            return p.handler.member.generation() not in (None, generation)
        wait_until(rebalanced, 60, "the rebalance the other member's join starts")
    finally:
        other.close()
    tasks.append(send(stack, kafka, short_audio))
    committed(kafka, stack, 3, 120)
    done = outcomes(kafka, stack)
    assert {k: len(v) for k, v in done.items()} == {t["task_uuid"]: 1 for t in tasks}
    assert all(r["success"] for v in done.values() for r in v)
    assert p.stop() == 0


def test_stems_the_store_stage_encodes_hold_the_samples_the_engine_would_have_written(stack, tmp_path, short_audio):
    """The tiny model's real separation of a 16-bit FLAC, once encoded by the engine child as in the
    sequential order and once left as WAV for the store stage, from the input the child decodes and
    from the one the fetch stage decoded ahead: the same samples in every FLAC stem."""
    source = tmp_path / "song.flac"
    assert ffmpeg.write(["-i", str(short_audio), "-c:a", "flac"], str(source)) is None
    engine = Engine(EngineSettings(str(stack.model_dir), str(tmp_path / "out"), (tinymodel.TINY_MODEL,), "flac",
                                   tinymodel.HOP_LENGTH, tinymodel.SEGMENT_SIZE, 1, warm_up=False))
    engine.start()
    try:
        wait_until(lambda: engine.poll_ready(1.0), 180, "the engine to load the tiny model", interval=0)
        decoded = decoded_input.decode_ahead(source, tmp_path, "decoded", 60.0, 310.0)
        assert decoded is not None
        runs = []
        for later, ahead in ((False, None), (True, None), (True, str(decoded))):
            engine.submit(Job(f"encode-later-{later}", str(source), tinymodel.TINY_MODEL, "flac",
                              str(tmp_path / f"job-{later}-{ahead is not None}"), encode_later=later, decoded=ahead))
            runs.append(wait_until(lambda: engine.poll_result(1.0), 240, "the separation", interval=0))
    finally:
        engine.close()
    by_child, *lefts = (run.stems for run in runs)
    for left in lefts:
        assert all(path.endswith(".wav") for path in left.values()), "the child left the encoding to the store stage"
        by_stage = stem_encoding.encode(left, "flac")
        assert set(by_stage) == set(by_child) == {"vocals", "instrumental"}
        for stem in by_child:
            assert not Path(left[stem]).exists(), "the WAV goes once encoded"
            expected, rate = soundfile.read(by_child[stem], dtype="int16")
            got, got_rate = soundfile.read(by_stage[stem], dtype="int16")
            assert soundfile.info(by_stage[stem]).subtype == "PCM_16" and got_rate == rate
            assert np.array_equal(got, expected), f"{stem}: the same samples"


def test_two_jobs_in_the_engine_at_once_each_give_the_stems_they_give_alone(stack, tmp_path):
    """The tiny model's real separation of two inputs, the second sent to the child while the first is
    in it (the pipeline's send ahead: the child prepares it beside the first's forward and runs its
    forward as the first one's ends, device_gate.py), each with its own format and input: each job's
    stems hold the samples it gives when it is alone in the child."""
    first_in = tinymodel.write_sample(tmp_path / "first.wav", seconds=6, seed=1)
    second_in = tinymodel.write_sample(tmp_path / "second.wav", seconds=3, seed=2)
    engine = Engine(EngineSettings(str(stack.model_dir), str(tmp_path / "out"), (tinymodel.TINY_MODEL,), "flac",
                                   tinymodel.HOP_LENGTH, tinymodel.SEGMENT_SIZE, 1, warm_up=False))

    def job(name: str, source: Path, fmt: str) -> Job:
        return Job(name, str(source), tinymodel.TINY_MODEL, fmt, str(tmp_path / name))

    engine.start()
    try:
        wait_until(lambda: engine.poll_ready(1.0), 180, "the engine to load the tiny model", interval=0)
        alone = []
        for name, source, fmt in (("first-alone", first_in, "flac"), ("second-alone", second_in, "wav")):
            engine.submit(job(name, source, fmt))
            alone.append(wait_until(lambda: engine.poll_result(1.0), 240, "the separation", interval=0))
        engine.submit(job("first", first_in, "flac"))
        ahead = engine.submit_ahead(job("second", second_in, "wav"))
        together = [wait_until(lambda: engine.poll_result(1.0), 240, "the first separation", interval=0)]
        assert engine.adopt(ahead)
        together.append(wait_until(lambda: engine.poll_result(1.0), 240, "the second separation", interval=0))
    finally:
        engine.close()
    for by_itself, beside, fmt in zip(alone, together, ("flac", "wav")):
        assert isinstance(by_itself, Separated) and isinstance(beside, Separated)
        assert set(beside.stems) == set(by_itself.stems) == {"vocals", "instrumental"}
        for stem, path in beside.stems.items():
            assert path.endswith(f".{fmt}") and Path(path).parent.name in ("first", "second")
            expected, rate = soundfile.read(by_itself.stems[stem], dtype="int16")
            got, got_rate = soundfile.read(path, dtype="int16")
            assert got_rate == rate and np.array_equal(got, expected), f"{stem} of {Path(path).parent.name}"


def test_an_input_decoded_ahead_onto_a_full_disk_is_left_to_the_engine_and_the_processor_lives(tmp_path):
    """The fetch stage's decode on an output disk that fills up under it: nothing written, nothing left, the child decodes
    the input itself; never a SIGBUS (a store into a mapped page of a full tmpfs killed the processor in
    `make faults`)."""
    source = tinymodel.write_sample(tmp_path / "song.wav", seconds=30)
    with small_filesystem(tmp_path / "small", 16) as small:
        if small is None:
            pytest.skip("mounting a tmpfs is not allowed here")
        ballast = fill(small)
        os.truncate(ballast, ballast.stat().st_size - (1 << 20))  # room for the header, not the samples
        try:
            assert decoded_input.decode_ahead(source, small, "full", 60.0, 310.0) is None
            assert [p.name for p in small.iterdir()] == [ballast.name], "no decoded file left behind"
        finally:
            ballast.unlink()
        decoded = decoded_input.decode_ahead(source, small, "room", 60.0, 310.0)  # room again: decoded
        assert decoded is not None
        expected, _ = soundfile.read(str(source), dtype="float32", always_2d=True)
        assert np.array_equal(np.load(decoded), expected)
