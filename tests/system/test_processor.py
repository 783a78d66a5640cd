"""The processor against a real broker, a real engine and the notify protocol.

Every outcome is read from outside: the group's committed offsets, the result
and dead-letter topics, the files, the notify socket and the exit status.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from datetime import datetime

import pytest

from scrape import listen as scrape_listen
from scrape import scrape
from support import fill, pings_in_silence, small_filesystem, wait_until
from devtools import tinymodel
from uvrd.kafka.status import progress_key


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory):
    return tinymodel.write_sample(tmp_path_factory.mktemp("short") / "short.wav", seconds=2)


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


def settled(daemon, n: int = 1) -> list[dict]:
    """Wait for the daemon's own account of n final tasks: it logs and cleans up just after the commit."""
    final = lambda: [e for e in daemon.log_events() if e.get("event") in ("task succeeded", "task failed")]  # noqa: E731
    return wait_until(lambda: len(final()) >= n and final(), 10, f"{n} task(s) settled in the log")


def test_task_gives_one_result_and_commits_its_offset(stack, kafka, short_audio):
    p = stack.start()
    p.wait_ready()
    task_uuid = str(uuid.uuid4())
    audio = stack.spool_copy(short_audio, f"{task_uuid}.wav")  # the api's name for the task's input
    task = stack.task(audio, task_uuid=task_uuid)
    kafka.send(stack.tasks, task)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 60, "offset 1 committed")
    settled(p)
    results = kafka.results(stack.results)
    assert len(results) == 1
    r = results[0]
    assert r["task_uuid"] == task["task_uuid"] and r["success"] is True, r
    assert r["hook_url"] == task["hook_url"]
    assert set(r["stems"]) == {"vocals", "instrumental"}
    assert r["stems"]["vocals"] == r["vocals_path"] and r["stems"]["instrumental"] == r["instrumental_path"]
    for path in r["stems"].values():
        assert path.startswith(str(stack.output / task["task_uuid"]))
        with open(path, "rb") as f:
            assert f.read(4) == b"RIFF"
    assert not audio.exists(), "the input is removed once the task is final"
    assert kafka.read_all(stack.dead_letter) == []
    statuses = p.notify.statuses()
    assert statuses[0].startswith("loading model")
    assert f"idle, {tinymodel.TINY_MODEL} on CPUExecutionProvider" in statuses, "idle, and where the model runs"
    assert any(s.startswith(f"separating {task['task_uuid']} for") for s in statuses)
    # Every line about the task carries its task_uuid.
    task_lines = [e for e in p.log_events() if e.get("event") in ("task started", "task succeeded")]
    assert len(task_lines) == 2 and all(e["task_uuid"] == task["task_uuid"] for e in task_lines)
    p.signal(signal.SIGTERM)
    assert p.wait_exit(10) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_worker_exits_within_a_second(stack, sig):
    p = stack.start()
    p.wait_ready()
    wait_until(lambda: p.events("partitions assigned"), 30, "the group join")
    engine = engine_pid(p)
    children = children_of(p.proc.pid)
    assert engine in children and len(children) == 2, "the engine and multiprocessing's resource tracker"
    sent = p.signal(sig)
    assert p.wait_exit(10) == 0
    elapsed = time.monotonic() - sent
    print(f"idle stop took {elapsed:.3f} s")
    assert elapsed < 1.0, f"idle stop took {elapsed:.2f} s"
    lines = p.notify.lines()
    assert lines.index("STOPPING=1") > lines.index("READY=1")
    # Nothing left for systemd's final SIGKILL (KillMode=mixed) to find.
    assert [pid for pid in children if not pid_gone(pid)] == []


def test_sigterm_mid_job_finishes_the_job_commits_and_exits(stack, kafka, long_audio):
    metrics = scrape_listen()
    p = stack.start(config=stack.write_config(metrics_listen=metrics))
    p.wait_ready()
    task = start_job(stack, kafka, p, long_audio)
    assert scrape(metrics).value("uvrd_drain_elapsed_seconds") == 0
    p.signal(signal.SIGTERM)
    p.notify.wait_for(lambda line: line.startswith("STATUS=draining: separating"), 10, "draining status")
    # While it drains, the time since the stop grows, within the window.
    draining = wait_until(lambda: (s := scrape(metrics)).value("uvrd_drain_elapsed_seconds") > 0 and s, 10, "the drain")
    assert draining.value("uvrd_drain_elapsed_seconds") < draining.value("uvrd_drain_window_seconds") == 60
    assert p.wait_exit(120) == 0
    results = kafka.results(stack.results)
    assert [(r["task_uuid"], r["success"]) for r in results] == [(task["task_uuid"], True)]
    assert kafka.committed(stack.group, stack.tasks) == {0: 1}


def test_job_longer_than_drain_window_is_left_for_another_worker(stack, kafka, long_audio):
    first = stack.start(config=stack.write_config("short-drain.toml", drain_timeout=1))
    first.wait_ready()
    task = start_job(stack, kafka, first, long_audio)
    engine = engine_pid(first)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(15) == 0
    assert pid_gone(engine), "the separation was aborted"
    assert kafka.results(stack.results) == []
    assert kafka.committed(stack.group, stack.tasks).get(0, 0) == 0
    assert os.path.exists(task["audio_path"]), "the input stays until the task is final"
    assert not any("failed" in e.get("event", "") for e in first.log_events())

    second = stack.start()
    second.wait_ready()
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 120, "the second worker's commit")
    results = kafka.results(stack.results)
    assert [(r["task_uuid"], r["success"]) for r in results] == [(task["task_uuid"], True)]


def test_second_signal_abandons_the_job_at_once(stack, kafka, long_audio):
    p = stack.start()
    p.wait_ready()
    start_job(stack, kafka, p, long_audio)
    p.signal(signal.SIGTERM)
    p.notify.wait_for(lambda line: line.startswith("STATUS=draining"), 10, "draining")
    p.signal(signal.SIGINT)
    assert p.wait_exit(10) == 0
    assert kafka.results(stack.results) == []
    assert kafka.committed(stack.group, stack.tasks).get(0, 0) == 0


def test_sigkill_mid_job_is_redelivered_and_completed_once(stack, kafka, long_audio):
    first = stack.start()
    first.wait_ready()
    task = start_job(stack, kafka, first, long_audio)
    engine = engine_pid(first)
    first.signal(signal.SIGKILL)
    first.wait_exit(10)
    wait_until(lambda: pid_gone(engine), 10, "the engine to die with its worker")
    assert kafka.results(stack.results) == []

    second = stack.start()
    second.wait_ready()
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 120, "the redelivered task's commit")
    results = kafka.results(stack.results)
    assert [(r["task_uuid"], r["success"]) for r in results] == [(task["task_uuid"], True)]


def test_job_longer_than_max_poll_interval_costs_no_rebalance(stack, kafka, long_audio):
    max_poll_ms = 3000
    config = stack.write_config("short-poll.toml", kafka={"max_poll_interval_ms": max_poll_ms})
    p = stack.start(config=config)
    p.wait_ready()
    wait_until(lambda: p.events("partitions assigned"), 30, "the group join")
    task = start_job(stack, kafka, p, long_audio)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 120, "the commit")
    finished = settled(p)[0]["timestamp"]
    started = p.events("task started")[0]["timestamp"]
    took = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    assert took > max_poll_ms / 1000, f"the job ({took:.1f} s) must outlast max.poll.interval.ms to prove anything"
    assert len(p.events("partitions assigned")) == 1, "no rebalance"
    assert kafka.results(stack.results)[0]["task_uuid"] == task["task_uuid"]
    assert len(kafka.results(stack.results)) == 1


def test_at_least_once_produces_flushes_then_commits(stack, kafka, short_audio):
    p = stack.start(config=stack.write_config("alo.toml", commit="at-least-once"))
    p.wait_ready()
    task = stack.task(stack.spool_copy(short_audio))
    kafka.send(stack.tasks, task)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 60, "the commit")
    assert [r["task_uuid"] for r in kafka.results(stack.results)] == [task["task_uuid"]]
    assert "at-least-once" in json.dumps(p.events("processor ready"))


def test_bad_input_fails_clearly_and_the_worker_carries_on(stack, kafka, tmp_path, short_audio):
    outside = tmp_path / "outside.wav"
    outside.write_bytes(short_audio.read_bytes())
    (stack.spool / "link.wav").symlink_to("/etc/passwd")
    (stack.spool / "dir.wav").mkdir()
    (stack.spool / "empty.wav").write_bytes(b"")
    not_audio_uuid = str(uuid.uuid4())
    not_audio = stack.spool / f"{not_audio_uuid}.wav"  # the task's own, as the api names it
    not_audio.write_text("this is not audio\n" * 200)
    good = stack.spool_copy(short_audio)

    def task(**fields):
        # Each its own input file.
        audio = fields.pop("audio", None) or stack.spool_copy(short_audio)
        return json.dumps(stack.task(audio, **fields)).encode()

    u = lambda: str(uuid.uuid4())  # noqa: E731
    cases = [  # (value, the task_uuid the failure must carry, words the error must contain)
        (b"{not json", None, "not JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b"\xff\xfe\x00", None, "not UTF-8"),
        (b"[" * 100000 + b"]" * 100000, None, "nested too deeply"),
        (json.dumps({"task_uuid": (x := u()), "hook_url": "http://h.example/"}).encode(), x, "missing the field 'audio_path'"),
        (json.dumps({"task_uuid": (x := u()), "audio_path": 42, "hook_url": "http://h.example/"}).encode(), x,
         "'audio_path' must be a string"),
        (task(task_uuid="../../etc"), None, "task_uuid"),
        (task(task_uuid=(x := u()), hook_url="file:///etc/passwd"), x, "hook_url"),
        (task(task_uuid=(x := u()), model="nope.onnx"), x, "unknown model 'nope.onnx'"),
        (task(task_uuid=(x := u()), output_format="exe"), x, "unknown output_format"),
        (task(task_uuid=(x := u()), audio=stack.spool / "missing.wav"), x, "does not exist"),
        (task(task_uuid=(x := u()), audio=f"{stack.spool}/../outside.wav"), x, "outside the spool"),
        (task(task_uuid=(x := u()), audio=stack.spool / "link.wav"), x, "outside the spool"),
        (task(task_uuid=(x := u()), audio=stack.spool / "dir.wav"), x, "not a regular file"),
        (task(task_uuid=(x := u()), audio=stack.spool / "empty.wav"), x, "is empty"),
        (task(task_uuid=not_audio_uuid, audio=not_audio), not_audio_uuid, "could not be decoded"),
    ]
    metrics = scrape_listen()
    p = stack.start(config=stack.write_config(metrics_listen=metrics))
    p.wait_ready()
    for value, _, _ in cases:
        kafka.send(stack.tasks, value, key=None)
    good_task = stack.task(good)
    kafka.send(stack.tasks, good_task)
    n = len(cases) + 1
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == n, 120, f"all {n} offsets committed")

    results = kafka.results(stack.results)
    assert len(results) == n
    for (_value, task_uuid, words), result in zip(cases, results):
        assert result["success"] is False and words in result["error_message"], (words, result)
        assert result["task_uuid"] == task_uuid
    assert results[-1]["success"] is True and results[-1]["task_uuid"] == good_task["task_uuid"]
    dead = kafka.read_all(stack.dead_letter)
    assert [r.value for r in dead] == [value for value, _, _ in cases], "each bad task is copied verbatim"
    assert all(dict(r.headers)["uvrd-error"] for r in dead)
    assert p.proc.poll() is None and len(p.events("engine starting")) == 1, "no restart on bad input"
    counted = scrape(metrics)
    assert counted.labelled("uvrd_tasks_total", "reason") == {
        "unreadable": 8, "unknown_model": 1, "unknown_output_format": 1, "bad_input_ref": 5, "unusable_audio": 1, "": 1}
    assert counted.value("uvrd_tasks_total", outcome="refused") == 15
    assert counted.value("uvrd_tasks_total", outcome="failed", reason="unusable_audio") == 1
    assert counted.value("uvrd_tasks_total", outcome="succeeded") == 1
    assert counted.value("uvrd_tasks_accepted_total") == 2, "the two whose input was fetched"
    assert counted.value("uvrd_dead_letters_total", stage="processor") == len(dead)
    assert counted.value("uvrd_engine_restarts_total") == 0
    assert outside.exists(), "a file outside the spool is never touched"
    assert not_audio.exists(), "a dead-lettered task keeps its input until spool_retention, for a replay"
    p.signal(signal.SIGTERM)
    assert p.wait_exit(10) == 0


def test_a_task_naming_another_tasks_input_never_removes_it(stack, kafka, short_audio):
    """Duplicated or forged tasks that name another task's spool file: refused or separated,
    none removes it, and the task it belongs to then succeeds and removes it."""
    owner = str(uuid.uuid4())
    audio = stack.spool_copy(short_audio, f"{owner}.wav")  # as the api names the owner's input
    forged = [
        stack.task(audio, model="nope.onnx"),
        stack.task(audio, output_format="exe"),
        stack.task(audio.name),  # relative to the spool
        stack.task(audio, task_uuid=f"{owner}.wav"),  # a uuid that extends the owner's
    ]
    p = stack.start()
    p.wait_ready()
    for t in forged:
        kafka.send(stack.tasks, t)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == len(forged), 120, "the forged tasks")
    settled(p, len(forged))
    assert [r["success"] for r in kafka.results(stack.results)] == [False, False, True, True]
    assert audio.exists(), "another task's input is never removed"

    kafka.send(stack.tasks, stack.task(audio, task_uuid=owner))
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == len(forged) + 1, 60, "the owner's task")
    settled(p, len(forged) + 1)
    last = kafka.results(stack.results)[-1]
    assert (last["task_uuid"], last["success"]) == (owner, True), last
    assert not audio.exists(), "the owner's task removes its own input once final"
    p.signal(signal.SIGTERM)
    assert p.wait_exit(10) == 0


def test_job_over_job_timeout_is_killed_retried_then_failed(stack, kafka, long_audio):
    p = stack.start(config=stack.write_config("jt.toml", job_timeout=2, job_retries=1))
    p.wait_ready()
    task = start_job(stack, kafka, p, long_audio)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 120, "the failure's commit")
    [result] = kafka.results(stack.results)
    assert result["task_uuid"] == task["task_uuid"] and result["success"] is False
    assert "did not finish in 2 runs" in result["error_message"] and "job_timeout (2 s)" in result["error_message"]
    assert len(kafka.read_all(stack.dead_letter)) == 1
    assert len(p.events("engine starting")) == 3, "killed after each of the two runs, then restarted"


def test_engine_crash_mid_job_is_retried_and_succeeds(stack, kafka, long_audio):
    metrics = scrape_listen()
    p = stack.start(config=stack.write_config(metrics_listen=metrics))
    p.wait_ready()
    task = start_job(stack, kafka, p, long_audio)
    os.kill(engine_pid(p), signal.SIGKILL)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 180, "the commit")
    assert [(r["task_uuid"], r["success"]) for r in kafka.results(stack.results)] == [(task["task_uuid"], True)]
    [retry] = p.events("separation run did not finish; retrying")
    assert "killed by signal 9" in retry["reason"]
    counted = scrape(metrics)
    assert counted.labelled("uvrd_engine_restarts_total", "cause") == {"run_unfinished": 1}
    assert counted.labelled("uvrd_tasks_total", "outcome") == {"succeeded": 1}


def test_a_full_output_disk_holds_the_task_until_there_is_space(stack, kafka, short_audio, tmp_path):
    with small_filesystem(tmp_path / "disk", 8) as disk:
        if disk is None:
            pytest.skip("this machine does not allow mounting a small tmpfs to fill")
        p = stack.start(config=stack.write_config("full.toml", output_dir=str(disk)))
        p.wait_ready()
        ballast = fill(disk)
        task = stack.task(stack.spool_copy(short_audio))
        kafka.send(stack.tasks, task)
        p.notify.wait_for(lambda line: line == f"STATUS=output disk full: task {task['task_uuid']} waits for "
                                              f"space to run again", 90, "the wait for space")
        [waiting] = p.events("output disk full; the task runs again once there is space")[:1]
        assert "No space left on device" in waiting["error"] and str(disk) not in waiting["error"]
        assert kafka.committed(stack.group, stack.tasks).get(0) is None and kafka.results(stack.results) == [], \
            "a full disk is this host's trouble: the task is neither failed nor committed"

        ballast.unlink()
        wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 120, "the commit")
        [result] = kafka.results(stack.results)
        assert result["task_uuid"] == task["task_uuid"] and result["success"] is True, result
        assert all(path.startswith(str(disk)) for path in result["stems"].values())
        assert kafka.read_all(stack.dead_letter) == []
        p.signal(signal.SIGTERM)
        assert p.wait_exit(30) == 0


def test_task_that_keeps_killing_its_worker_is_failed(stack, kafka, long_audio):
    config = stack.write_config("once.toml", max_attempts=1)
    first = stack.start(config=config)
    first.wait_ready()
    task = start_job(stack, kafka, first, long_audio)
    first.signal(signal.SIGKILL)
    first.wait_exit(10)
    second = stack.start(config=config)
    second.wait_ready()
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 120, "the failure's commit")
    [result] = kafka.results(stack.results)
    assert result["task_uuid"] == task["task_uuid"] and result["success"] is False
    assert "killed or hung" in result["error_message"]
    assert not second.events("task started"), "the task was not run again"


def test_an_engine_that_dies_while_loading_is_replaced_not_fatal(stack, kafka, short_audio):
    p = stack.start()
    os.kill(engine_pid(p), signal.SIGKILL)  # the model takes seconds to load: this is mid-load
    p.wait_ready()
    assert p.events("separation engine died while loading the model; restarting it")
    task = stack.task(stack.spool_copy(short_audio))
    kafka.send(stack.tasks, task)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 60, "the commit")
    assert [(r["task_uuid"], r["success"]) for r in kafka.results(stack.results)] == [(task["task_uuid"], True)]


def test_watchdog_pings_stop_while_the_engine_hangs(stack, kafka):
    p = stack.start(config=stack.write_config("wd.toml", engine_stall_timeout=2), watchdog_usec=1_000_000)
    p.wait_ready()
    ready_at = p.notify.times("READY=1")[0]
    wait_until(lambda: len(p.notify.times("WATCHDOG=1", since=ready_at)) >= 2, 10, "watchdog pings")
    engine = engine_pid(p)
    os.kill(engine, signal.SIGSTOP)
    try:
        hung_at = time.monotonic()
        # Pings may go on until the heartbeat is engine_stall_timeout old; then none may come.
        quiet_from = hung_at + 2.5
        assert pings_in_silence(p.notify, quiet_from, 3) == []
    finally:
        os.kill(engine, signal.SIGCONT)
    resumed = time.monotonic()
    wait_until(lambda: p.notify.times("WATCHDOG=1", since=resumed), 10, "pings to resume")
    p.signal(signal.SIGTERM)
    assert p.wait_exit(10) == 0


def test_a_model_that_does_not_exist_stops_the_unit_with_ex_config(stack):
    p = stack.start(config=stack.write_config("nomodel.toml", model="No-Such-Model.onnx"))
    assert p.wait_exit(120) == 78
    assert "READY=1" not in p.notify.lines()
    [error] = p.events("separation engine could not run")
    assert "No-Such-Model.onnx" in error["error"]


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
        p.wait_ready(60)
        p.signal(signal.SIGTERM)
        assert p.wait_exit(10) == 0


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

    wait_until(lambda: first.events("task succeeded") or gave_up(), 10, "the first worker's account of the job")
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
        wait_until(lambda: len(p.notify.times("WATCHDOG=1", since=ready_at)) >= 2, 10, "watchdog pings")
        own.pause()
        try:
            # One heartbeat interval plus broker_timeout after the pause, pings must have stopped.
            quiet_from = time.monotonic() + 1 + 3 + 0.5
            assert pings_in_silence(p.notify, quiet_from, 3) == []
        finally:
            own.resume()
        resumed = time.monotonic()
        wait_until(lambda: p.notify.times("WATCHDOG=1", since=resumed), 30, "pings to resume")
        p.signal(signal.SIGTERM)
        assert p.wait_exit(15) == 0


def test_status_topic_follows_the_task(stack, kafka, short_audio):
    p = stack.start()
    p.wait_ready()
    task = stack.task(stack.spool_copy(short_audio), submitted_at="2026-01-01T00:00:00+00:00")
    kafka.send(stack.tasks, task)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 60, "the commit")
    records = kafka.read_all(stack.status)
    # The task's own key: its outcome, committed with the result.
    states = [json.loads(r.value) for r in records if r.key == task["task_uuid"].encode()]
    assert [s["state"] for s in states] == ["succeeded"] and states[0]["progress"] == 1.0
    # The run's reports on a key of their own: "processing" from its start, the progress moving only
    # forward, then the tombstone the outcome's commit writes.
    reports = [r.value and json.loads(r.value) for r in records if r.key == progress_key(task["task_uuid"])]
    assert reports[-1] is None and all(r["state"] == "processing" for r in reports[:-1])
    assert (reports[0]["progress"], reports[0]["step"]) == (0.0, "started") and reports[0]["started_at"]
    progress = [r["progress"] for r in reports[:-1]]
    assert progress == sorted(progress)
    states = reports[:-1] + states
    assert all(s["task_uuid"] == task["task_uuid"] for s in states)
    done = states[-1]
    assert done["submitted_at"] == task["submitted_at"] and done["started_at"] <= done["finished_at"]
    assert set(done["stems"]) == {"vocals", "instrumental"}


def test_higher_priority_goes_first_and_low_priority_is_not_starved(stack, kafka, short_audio):
    from uvrd.processor.priority import FAIR_EVERY

    high = [stack.task(stack.spool_copy(short_audio)) for _ in range(FAIR_EVERY + 3)]
    low = stack.task(stack.spool_copy(short_audio))
    kafka.send(stack.topics.task_topic(1), low)
    for t in high:
        kafka.send(stack.topics.task_topic(5), t)
    p = stack.start()
    p.wait_ready()
    n = len(high) + 1
    wait_until(lambda: len(kafka.results(stack.results)) == n, 180, f"{n} results")
    order = [r["task_uuid"] for r in kafka.results(stack.results)]
    assert order[0] == high[0]["task_uuid"], "the waiting high-priority task goes first"
    assert order.index(low["task_uuid"]) == FAIR_EVERY, "the low-priority task gets its turn under high load"
