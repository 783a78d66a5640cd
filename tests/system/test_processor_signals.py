"""The processor as a process: signals, the drain, SIGKILL, the watchdog and the broker's absence.

Each test starts ``uvrd processor`` as systemd would, with a real engine and the notify protocol;
what it does with a task, in the test process, is tests/service/test_processor.py's.  Every outcome
is read from outside: the group's committed offsets, the result topic, the files, the notify socket,
the log and the exit status.  No test asserts how long something took (bench/stop_latency.py and
bench/drain.py measure that): a bound on a wait only ends it.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid

import pytest

from scrape import listen as scrape_listen
from scrape import scrape
from support import KafkaView, pings_in_silence, wait_until

from devtools import tinymodel

# A drain window far beyond the long job's separation on any machine (about 8 s unloaded; it outran
# 60 s on a loaded 2-core one): only a second signal or a drain_timeout a test sets ends the job.
LONG_DRAIN_S = 600
# Past engine_stall_timeout (or broker_timeout), a turn that had already passed its health check may
# still send its ping: a loaded machine may hold that turn back, so the silence is watched from later.
TURN_SLACK_S = 2.0


def start_job(stack, kafka, daemon, audio):
    """Submit a task of *audio* and wait until the worker reports separating it."""
    task = stack.task(stack.spool_copy(audio))
    kafka.send(stack.tasks, task)
    daemon.notify.wait_for(lambda line: line.startswith(f"STATUS=separating {task['task_uuid']}"), 90,
                           "the job to start")
    return task


def engine_pid(daemon) -> int:
    """The current engine child, as the worker logged it."""
    return wait_until(lambda: daemon.events("engine starting"), 30, "the engine child")[-1]["pid"]


def children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0): count it as gone.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1].startswith("Z")

def s3_task(objectstore, prefix: str, audio) -> dict:
    """A task whose input the test put in the object store under *prefix*."""
    key = f"{prefix}/inputs/{uuid.uuid4()}.wav"
    objectstore.client().upload_file(str(audio), objectstore.bucket, key)
    return {"task_uuid": str(uuid.uuid4()), "storage": "s3", "audio_key": key, "hook_url": None}


def each_ended_once_in_order(view, stack, *tasks: dict) -> None:
    """Every one of *tasks* committed and ended in one success, in their order, with no dead letter."""
    wait_until(lambda: view.committed(stack.group, stack.tasks).get(0) == len(tasks), 240, "every task's commit")
    assert [(r["task_uuid"], r["success"]) for r in view.results(stack.results)] == \
        [(t["task_uuid"], True) for t in tasks]
    assert list(view.read_all(stack.dead_letter)) == []



@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_idle_worker_exits_0_on_the_signal_leaving_no_child(stack, sig):
    """How soon it exits is bench/stop_latency.py's (SIGTERM to exit of an idle processor)."""
    p = stack.start()
    p.wait_ready()
    wait_until(lambda: p.events("partitions assigned"), 30, "the group join")
    engine = engine_pid(p)
    children = children_of(p.proc.pid)
    assert engine in children and len(children) == 2, "the engine and multiprocessing's resource tracker"
    p.signal(sig)
    assert p.wait_exit(60) == 0
    lines = p.notify.lines()
    assert lines.index("STOPPING=1") > lines.index("READY=1")
    # Nothing left for systemd's final SIGKILL (KillMode=mixed) to find.
    assert [pid for pid in children if not pid_gone(pid)] == []


@pytest.mark.timeout(LONG_DRAIN_S + 300)
def test_sigterm_mid_job_finishes_the_job_commits_and_exits(stack, kafka, long_audio):
    metrics = scrape_listen()
    p = stack.start(config=stack.write_config(metrics_listen=metrics, drain_timeout=LONG_DRAIN_S))
    p.wait_ready()
    task = start_job(stack, kafka, p, long_audio)
    assert scrape(metrics).value("uvrd_drain_elapsed_seconds") == 0
    p.signal(signal.SIGTERM)
    p.notify.wait_for(lambda line: line.startswith("STATUS=draining: separating"), 60, "draining status")
    # While it drains, the time since the stop grows, within the window.
    draining = wait_until(lambda: (s := scrape(metrics)).value("uvrd_drain_elapsed_seconds") > 0 and s, 60, "the drain")
    assert draining.value("uvrd_drain_elapsed_seconds") < draining.value("uvrd_drain_window_seconds") == LONG_DRAIN_S
    assert p.wait_exit(LONG_DRAIN_S + 60) == 0
    results = kafka.results(stack.results)
    assert [(r["task_uuid"], r["success"]) for r in results] == [(task["task_uuid"], True)]
    assert kafka.committed(stack.group, stack.tasks) == {0: 1}
    # Every line about the task carries its task_uuid (journalctl TASK_UUID=... finds them).
    task_lines = [e for e in p.log_events() if e.get("event") in ("task started", "task succeeded")]
    assert len(task_lines) == 2 and all(e["task_uuid"] == task["task_uuid"] for e in task_lines)


def test_job_longer_than_drain_window_is_left_for_another_worker(stack, kafka, long_audio):
    first = stack.start(config=stack.write_config("short-drain.toml", drain_timeout=1))
    first.wait_ready()
    task = start_job(stack, kafka, first, long_audio)
    engine = engine_pid(first)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(60) == 0
    assert pid_gone(engine), "the separation was aborted"
    assert kafka.results(stack.results) == []
    assert kafka.committed(stack.group, stack.tasks).get(0, 0) == 0
    assert os.path.exists(task["audio_path"]), "the input stays until the task is final"
    assert not any("failed" in e.get("event", "") for e in first.log_events())

    second = stack.start()
    second.wait_ready()
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 240, "the second worker's commit")
    results = kafka.results(stack.results)
    assert [(r["task_uuid"], r["success"]) for r in results] == [(task["task_uuid"], True)]


def test_a_second_signal_abandons_the_job_leaving_it_uncommitted(stack, kafka, long_audio):
    """The drain window outlasts the job: only the second signal can have ended it unfinished."""
    p = stack.start(config=stack.write_config(drain_timeout=LONG_DRAIN_S))
    p.wait_ready()
    start_job(stack, kafka, p, long_audio)
    p.signal(signal.SIGTERM)
    p.notify.wait_for(lambda line: line.startswith("STATUS=draining"), 60, "draining")
    p.signal(signal.SIGINT)
    assert p.wait_exit(120) == 0
    assert kafka.results(stack.results) == []
    assert kafka.committed(stack.group, stack.tasks).get(0, 0) == 0


def test_sigkill_mid_job_is_redelivered_and_completed_once(stack, kafka, long_audio):
    first = stack.start()
    first.wait_ready()
    task = start_job(stack, kafka, first, long_audio)
    engine = engine_pid(first)
    first.signal(signal.SIGKILL)
    first.wait_exit(30)
    wait_until(lambda: pid_gone(engine), 30, "the engine to die with its worker")
    assert kafka.results(stack.results) == []

    second = stack.start()
    second.wait_ready()
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 240, "the redelivered task's commit")
    results = kafka.results(stack.results)
    assert [(r["task_uuid"], r["success"]) for r in results] == [(task["task_uuid"], True)]


def test_watchdog_pings_stop_while_the_engine_hangs(stack, kafka):
    p = stack.start(config=stack.write_config("wd.toml", engine_stall_timeout=2), watchdog_usec=1_000_000)
    p.wait_ready()
    ready_at = p.notify.times("READY=1")[0]
    wait_until(lambda: len(p.notify.times("WATCHDOG=1", since=ready_at)) >= 2, 30, "watchdog pings")
    engine = engine_pid(p)
    os.kill(engine, signal.SIGSTOP)
    try:
        hung_at = time.monotonic()
        # Pings may go on until the heartbeat is engine_stall_timeout old; then none may come for
        # three times WatchdogSec, long past the point where systemd would have ended the unit.
        quiet_from = hung_at + 2 + TURN_SLACK_S
        assert pings_in_silence(p.notify, quiet_from, 3) == []
    finally:
        os.kill(engine, signal.SIGCONT)
    resumed = time.monotonic()
    wait_until(lambda: p.notify.times("WATCHDOG=1", since=resumed), 30, "pings to resume")
    p.signal(signal.SIGTERM)
    assert p.wait_exit(60) == 0


def test_worker_waits_for_the_broker_and_becomes_ready_when_it_answers(stack, tmp_path):
    from uvrd.broker.loopback import free_port
    from uvrd.broker.tansu import TansuBroker

    port = free_port()
    config = stack.write_config("late.toml")
    config.write_text(config.read_text().replace(stack.bootstrap, f"127.0.0.1:{port}"))
    p = stack.start(config=config)
    wait_until(lambda: p.events("broker not reachable, retrying"), 120, "the retry")
    assert "READY=1" not in p.notify.lines()
    with TansuBroker(port=port, log_path=tmp_path / "late-broker.log") as late:
        late.create_uvrd_topics(stack.topics)
        p.wait_ready(120)
        p.signal(signal.SIGTERM)
        assert p.wait_exit(60) == 0


@pytest.mark.parametrize("stack", [2], indirect=True)
def test_a_worker_joining_mid_job_costs_no_duplicate(stack, kafka, long_audio):
    """Whoever the rebalance gives the busy partition to, the task ends in exactly one result."""
    first = stack.start()
    first.wait_ready()
    wait_until(lambda: first.events("partitions assigned"), 30, "the first join")
    task = start_job(stack, kafka, first, long_audio)
    second = stack.start()
    second.wait_ready()
    wait_until(lambda: len(first.events("partitions assigned")) >= 2, 60, "the rebalance")
    wait_until(lambda: sum(kafka.committed(stack.group, stack.tasks, partitions=2).values()) == 1, 120,
               "the task's commit")
    assert [(r["task_uuid"], r["success"]) for r in kafka.results(stack.results)] == [(task["task_uuid"], True)]

    def gave_up():
        # Mid-job, or with its result in hand when the rebalance ended without its partition.
        return (first.events("task left uncommitted for redelivery")
                + first.events("partition lost before the commit; another member redoes the record"))

    wait_until(lambda: first.events("task succeeded") or gave_up(), 30, "the first worker's account of the job")
    kept = any(task["task_uuid"] in json.dumps(e) for e in first.events("task succeeded"))
    assert kept != bool(gave_up()), "either the first worker kept the job or it gave it up, never both"


def test_watchdog_pings_stop_while_the_broker_is_unreachable(stack, tmp_path):
    from uvrd.broker.tansu import TansuBroker

    with TansuBroker(log_path=tmp_path / "own-broker.log") as own:
        own.create_uvrd_topics(stack.topics)
        config = stack.write_config("bt.toml", broker_timeout=3)
        config.write_text(config.read_text().replace(stack.bootstrap, own.bootstrap))
        p = stack.start(config=config, watchdog_usec=1_000_000)
        p.wait_ready()
        wait_until(lambda: p.events("partitions assigned"), 30, "the group join")
        ready_at = p.notify.times("READY=1")[0]
        wait_until(lambda: len(p.notify.times("WATCHDOG=1", since=ready_at)) >= 2, 30, "watchdog pings")
        own.pause()
        try:
            # One heartbeat interval plus broker_timeout after the pause, pings must have stopped.
            quiet_from = time.monotonic() + 1 + 3 + TURN_SLACK_S
            assert pings_in_silence(p.notify, quiet_from, 3) == []
        finally:
            own.resume()
        resumed = time.monotonic()
        wait_until(lambda: p.notify.times("WATCHDOG=1", since=resumed), 60, "pings to resume")
        p.signal(signal.SIGTERM)
        assert p.wait_exit(60) == 0


def test_sigkill_with_stems_being_stored_and_the_next_task_taken_ahead_loses_and_repeats_nothing(
        stack, kafka, objectstore, long_audio, tmp_path):
    """The pipeline's other stages, killed: one task's stems in the store stage (the object store
    stopped under them) and the next task taken ahead (its fetch done, or caught by the stop too).
    Neither was committed, and the next processor ends each in one result."""
    prefix = f"sigkill/{uuid.uuid4().hex[:12]}"
    config = stack.write_config("s3.toml", storage=objectstore.storage_settings(prefix=prefix, timeout=1,
                                                                                 max_attempts=1))
    stored, ahead = (s3_task(objectstore, prefix, long_audio),
                     s3_task(objectstore, prefix, tinymodel.write_sample(tmp_path / "short.wav", seconds=2)))
    first = stack.start(config=config)
    first.wait_ready()
    kafka.send(stack.tasks, stored)
    kafka.send(stack.tasks, ahead)
    first.notify.wait_for(lambda line: line.startswith(f"STATUS=separating {stored['task_uuid']}"), 90,
                          "the first task's separation")
    wait_until(lambda: first.events("next task taken while the model runs"), 60, "the next task to be taken ahead")
    engine = engine_pid(first)
    objectstore.pause()
    try:
        # The first task's stems wait for the store: in the store stage, its retry saying so, or behind
        # the next task's fetch, whose retry says so if the stop caught the fetch stage too (a loaded
        # host); either way the first task is separated and nothing of it is stored.
        waiting = {f"STATUS=storage failed: task {t['task_uuid']} waits to try again" for t in (stored, ahead)}
        first.notify.wait_for(lambda line: line in waiting, 240, "the processor to wait for the store")
        first.signal(signal.SIGKILL)
        first.wait_exit(30)
        wait_until(lambda: pid_gone(engine), 30, "the engine to die with its worker")
    finally:
        objectstore.resume()
    assert kafka.results(stack.results) == []
    assert kafka.committed(stack.group, stack.tasks).get(0, 0) == 0

    second = stack.start(config=config)
    second.wait_ready()
    each_ended_once_in_order(kafka, stack, stored, ahead)
    for task in (stored, ahead):
        folder = f"{prefix}/stems/{task['task_uuid']}/"
        assert len(objectstore.keys(folder)) == 2, objectstore.keys(folder)


def test_a_broker_pause_while_stems_are_stored_ends_each_task_in_one_result(stack, objectstore, long_audio, tmp_path,
                                                                           request):
    """The broker stops answering while a task is in the model and the next one is taken ahead; the
    task's stems reach the bucket during the pause (the store stage needs no broker), and once the
    broker answers again each task ends in one result, whether the member kept its partition or the
    group moved it while the broker was away."""
    from uvrd.broker.tansu import TansuBroker

    prefix = f"pause/{uuid.uuid4().hex[:12]}"
    with TansuBroker(log_path=tmp_path / "own-broker.log") as own:
        own.create_uvrd_topics(stack.topics)
        config = stack.write_config("pause.toml", storage=objectstore.storage_settings(prefix=prefix))
        config.write_text(config.read_text().replace(stack.bootstrap, own.bootstrap))
        view = KafkaView(own.bootstrap)
        request.addfinalizer(view.close)
        p = stack.start(config=config)
        p.wait_ready()
        stored, ahead = (s3_task(objectstore, prefix, long_audio),
                         s3_task(objectstore, prefix, tinymodel.write_sample(tmp_path / "short.wav", seconds=2)))
        view.send(stack.tasks, stored)
        view.send(stack.tasks, ahead)
        p.notify.wait_for(lambda line: line.startswith(f"STATUS=separating {stored['task_uuid']}"), 90,
                          "the first task's separation")
        wait_until(lambda: p.events("next task taken while the model runs"), 60, "the next task to be taken ahead")
        own.pause()
        try:
            stems = f"{prefix}/stems/{stored['task_uuid']}/"
            wait_until(lambda: len(objectstore.keys(stems)) == 2, 240, "the first task's stems in the bucket")
        finally:
            own.resume()
        each_ended_once_in_order(view, stack, stored, ahead)
        p.signal(signal.SIGTERM)
        assert p.wait_exit(60) == 0
