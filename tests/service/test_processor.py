"""The processor in the test process, against the session broker: what it does with a task.

Each daemon runs ``ConsumerDaemon(config, Processor(...)).run()`` on a thread (inprocess.py).  Where
the model is not the point its engine child is scripted (scripted_engine.py: the real protocol and
real stem files, no torch), and the task's input file's name chooses how the separation goes; the
tiny model runs where the separation itself is checked.  Outcomes are read from outside: the
group's committed offsets, the result, status and dead-letter topics, the files, the STATUS= lines
on a notify socket, and the Prometheus registry the daemons share with this process (as deltas).

Signals, the drain, the watchdog and process deaths are tests/system/test_processor.py's.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import scripted_engine
from inprocess import InProcessDaemon
from support import NotifySocket, fill, small_filesystem, wait_until
from devtools import tinymodel
from uvrd.boards.status import progress_key
from uvrd.processor.daemon import Processor
from uvrd.processor.engine import Engine, EngineDied


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory) -> Path:
    return tinymodel.write_sample(tmp_path_factory.mktemp("short") / "short.wav", seconds=2)


@pytest.fixture
def notify(stack, monkeypatch) -> NotifySocket:
    """The socket systemd would hold: a daemon's Notifier reads NOTIFY_SOCKET when it is made, so
    every in-process daemon this test starts sends it READY=1 and its STATUS= lines."""
    sock = NotifySocket(stack.root)
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    yield sock
    sock.close()


class Counted:
    """The registry's counts since this was made: the in-process daemons count into the test
    process's own registry, which earlier tests have counted into too."""

    def __init__(self):
        self._before = _samples()

    def _delta(self) -> dict[tuple[str, tuple], float]:
        now = _samples()
        return {key: value - self._before.get(key, 0.0) for key, value in now.items()}

    def value(self, name: str, **labels) -> float:
        return sum(v for (n, have), v in self._delta().items()
                   if n == name and all(dict(have).get(k) == want for k, want in labels.items()))

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """*name*'s counts since, by the value of *label*; the labels that did not move left out."""
        out: dict[str, float] = {}
        for (n, have), v in self._delta().items():
            if n == name and v and label in dict(have):
                out[dict(have)[label]] = out.get(dict(have)[label], 0.0) + v
        return out


def _samples() -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in REGISTRY.collect() for s in family.samples}


def worker(stack, config: Path | None = None, engine=scripted_engine.engine, name: str | None = None) -> InProcessDaemon:
    """A ready processor in this process; scripted unless the test gives the real Engine."""
    return stack.in_process(Processor, config=config, name=name, engine=engine).wait_ready()


def committed(kafka, stack, n: int, timeout: float = 60) -> None:
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == n, timeout, f"offset {n} committed")


def test_task_gives_one_result_and_commits_its_offset(stack, kafka, short_audio, notify):
    """The tiny model's real separation: the stems are audio files where the result says."""
    p = worker(stack, engine=Engine)
    task_uuid = str(uuid.uuid4())
    audio = stack.spool_copy(short_audio, f"{task_uuid}.wav")  # the api's name for the task's input
    task = stack.task(audio, task_uuid=task_uuid)
    kafka.send(stack.tasks, task)
    committed(kafka, stack, 1)
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
    wait_until(lambda: not audio.exists(), 10, "the input's removal once the task is final")
    assert kafka.read_all(stack.dead_letter) == []
    statuses = notify.statuses()
    assert statuses[0].startswith("loading model")
    assert f"idle, {tinymodel.TINY_MODEL} on CPUExecutionProvider" in statuses, "idle, and where the model runs"
    assert any(s.startswith(f"separating {task['task_uuid']} for") for s in statuses)
    assert p.stop() == 0


def test_at_least_once_produces_flushes_then_commits(stack, kafka, short_audio):
    p = worker(stack, stack.write_config("alo.toml", commit="at-least-once"))
    assert p.daemon.member.commit_mode.mode == "at-least-once"
    task = stack.task(stack.spool_copy(short_audio))
    kafka.send(stack.tasks, task)
    committed(kafka, stack, 1)
    assert [r["task_uuid"] for r in kafka.results(stack.results)] == [task["task_uuid"]]


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
        # Probed in the engine child by the real audio_probe: the scripted child runs it too.
        (task(task_uuid=not_audio_uuid, audio=not_audio), not_audio_uuid, "could not be decoded"),
    ]
    counted = Counted()
    p = worker(stack)
    for value, _, _ in cases:
        kafka.send(stack.tasks, value, key=None)
    good_task = stack.task(good)
    kafka.send(stack.tasks, good_task)
    n = len(cases) + 1
    committed(kafka, stack, n, 120)

    results = kafka.results(stack.results)
    assert len(results) == n
    for (_value, task_uuid, words), result in zip(cases, results):
        assert result["success"] is False and words in result["error_message"], (words, result)
        assert result["task_uuid"] == task_uuid
    assert results[-1]["success"] is True and results[-1]["task_uuid"] == good_task["task_uuid"]
    dead = kafka.read_all(stack.dead_letter)
    assert [r.value for r in dead] == [value for value, _, _ in cases], "each bad task is copied verbatim"
    assert all(dict(r.headers)["uvrd-error"] for r in dead)
    assert p.running, "the worker carries on"
    assert counted.labelled("uvrd_tasks_total", "reason") == {
        "unreadable": 8, "unknown_model": 1, "unknown_output_format": 1, "bad_input_ref": 5, "unusable_audio": 1, "": 1}
    assert counted.value("uvrd_tasks_total", outcome="refused") == 15
    assert counted.value("uvrd_tasks_total", outcome="failed", reason="unusable_audio") == 1
    assert counted.value("uvrd_tasks_total", outcome="succeeded") == 1
    assert counted.value("uvrd_tasks_accepted_total") == 2, "the two whose input was fetched"
    assert counted.value("uvrd_dead_letters_total", stage="processor") == len(dead)
    assert counted.value("uvrd_engine_restarts_total") == 0, "no restart on bad input"
    assert outside.exists(), "a file outside the spool is never touched"
    assert not_audio.exists(), "a dead-lettered task keeps its input until spool_retention, for a replay"
    assert p.stop() == 0


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
    # Tasks are handled one after the other: once this one is committed, every forged task's
    # settlement (and any removal of an input) is over.
    after = stack.task(stack.spool_copy(short_audio))
    p = worker(stack)
    for t in [*forged, after]:
        kafka.send(stack.tasks, t)
    committed(kafka, stack, len(forged) + 1, 120)
    assert [r["success"] for r in kafka.results(stack.results)] == [False, False, True, True, True]
    assert audio.exists(), "another task's input is never removed"

    kafka.send(stack.tasks, stack.task(audio, task_uuid=owner))
    committed(kafka, stack, len(forged) + 2)
    last = kafka.results(stack.results)[-1]
    assert (last["task_uuid"], last["success"]) == (owner, True), last
    wait_until(lambda: not audio.exists(), 10, "the owner's task to remove its own input once final")
    assert p.stop() == 0


def test_job_over_job_timeout_is_killed_retried_then_failed(stack, kafka, short_audio):
    counted = Counted()
    worker(stack, stack.write_config("jt.toml", job_timeout=2, job_retries=1))
    task = stack.task(stack.spool_copy(short_audio, scripted_engine.input_name("hang")))
    kafka.send(stack.tasks, task)
    committed(kafka, stack, 1, 120)
    [result] = kafka.results(stack.results)
    assert result["task_uuid"] == task["task_uuid"] and result["success"] is False
    assert "did not finish in 2 runs" in result["error_message"] and "job_timeout (2 s)" in result["error_message"]
    assert len(kafka.read_all(stack.dead_letter)) == 1
    assert counted.labelled("uvrd_engine_restarts_total", "cause") == {"run_unfinished": 2}, \
        "killed after each of the two runs, then restarted"


def test_engine_crash_mid_job_is_retried_and_succeeds(stack, kafka, short_audio):
    """The child is SIGKILLed mid-job (by itself, as the OOM killer would): a fresh one runs it again."""
    counted = Counted()
    worker(stack)
    task = stack.task(stack.spool_copy(short_audio, scripted_engine.input_name("crash-once")))
    kafka.send(stack.tasks, task)
    committed(kafka, stack, 1, 120)
    assert [(r["task_uuid"], r["success"]) for r in kafka.results(stack.results)] == [(task["task_uuid"], True)]
    assert counted.labelled("uvrd_engine_restarts_total", "cause") == {"run_unfinished": 1}
    assert counted.labelled("uvrd_tasks_total", "outcome") == {"succeeded": 1}


def test_a_full_output_disk_holds_the_task_until_there_is_space(stack, kafka, short_audio, tmp_path, notify):
    with small_filesystem(tmp_path / "disk", 8) as disk:
        if disk is None:
            pytest.skip("this machine does not allow mounting a small tmpfs to fill")
        p = worker(stack, stack.write_config("full.toml", output_dir=str(disk)))
        ballast = fill(disk)
        task = stack.task(stack.spool_copy(short_audio))
        kafka.send(stack.tasks, task)
        notify.wait_for(lambda line: line == f"STATUS=output disk full: task {task['task_uuid']} waits for "
                                             f"space to run again", 90, "the wait for space")
        assert kafka.committed(stack.group, stack.tasks).get(0) is None and kafka.results(stack.results) == [], \
            "a full disk is this host's trouble: the task is neither failed nor committed"

        ballast.unlink()
        committed(kafka, stack, 1, 120)
        [result] = kafka.results(stack.results)
        assert result["task_uuid"] == task["task_uuid"] and result["success"] is True, result
        assert all(path.startswith(str(disk)) for path in result["stems"].values())
        assert kafka.read_all(stack.dead_letter) == []
        assert p.stop() == 0


def test_task_that_keeps_killing_its_worker_is_failed(stack, kafka, short_audio):
    """A SIGKILLed worker leaves this host's attempt ledger as it stood mid-job: the ledger is
    copied while the first worker runs the task and put back after it, as a kill would have left
    it (a stop instead takes the start back).  The next worker fails the task without running it."""
    config = stack.write_config("once.toml", max_attempts=1)
    ledger = stack.output / ".attempts"
    first = worker(stack, config, name="first")
    task = stack.task(stack.spool_copy(short_audio, scripted_engine.input_name("hang")))
    kafka.send(stack.tasks, task)
    wait_until(lambda: kafka.runs_started(stack.status, task["task_uuid"]) == 1, 60, "the first worker's run")
    mid_job = shutil.copytree(ledger, stack.root / "ledger-mid-job")  # it records a start before the run
    first.daemon.stop()
    first.daemon.stop()  # the second stop abandons the job at once
    assert first.wait_exit() == 0
    assert kafka.committed(stack.group, stack.tasks).get(0) is None
    shutil.rmtree(ledger, ignore_errors=True)
    shutil.copytree(mid_job, ledger)

    second = worker(stack, config, name="second")
    committed(kafka, stack, 1, 120)
    [result] = kafka.results(stack.results)
    assert result["task_uuid"] == task["task_uuid"] and result["success"] is False
    assert "killed or hung" in result["error_message"]
    # A run of the hanging input would still be going: the result came without one, and only the
    # first worker's run announced itself.
    assert kafka.runs_started(stack.status, task["task_uuid"]) == 1, "the task was not run again"
    assert second.stop() == 0



def test_an_engine_that_dies_while_loading_is_replaced_not_fatal(stack, kafka, short_audio):
    counted = Counted()
    worker(stack, stack.write_config("dies.toml", model="dies-loading-once.onnx"))
    assert counted.labelled("uvrd_engine_restarts_total", "cause") == {"died_while_loading": 1}
    task = stack.task(stack.spool_copy(short_audio))
    kafka.send(stack.tasks, task)
    committed(kafka, stack, 1)
    assert [(r["task_uuid"], r["success"]) for r in kafka.results(stack.results)] == [(task["task_uuid"], True)]


def test_a_model_that_does_not_exist_stops_the_unit_with_ex_config(stack, monkeypatch):
    """The real engine child and audio-separator's own refusal: the daemon ends before READY with the
    error `uvrd processor` turns into status 78 (EX_CONFIG), so that systemd does not restart it."""
    from uvrd.config import EX_CONFIG
    from uvrd.cli import processor as cli

    p = stack.in_process(Processor, config=stack.write_config("nomodel.toml", model="No-Such-Model.onnx"),
                         engine=Engine)
    with pytest.raises(EngineDied) as died:
        p.wait_exit(120)
    assert died.value.fatal_config and "No-Such-Model.onnx" in str(died.value)
    assert not p.daemon.ready
    def the_same_death(args, handler_class):
        raise died.value

    # The command's answer to that very error.
    monkeypatch.setattr(cli, "run_consumer_daemon", the_same_death)
    assert cli.run(None) == EX_CONFIG


def test_status_topic_follows_the_task(stack, kafka, short_audio):
    worker(stack, stack.write_config("status.toml", progress_interval=0.5))
    task = stack.task(stack.spool_copy(short_audio, scripted_engine.input_name("slow-3s")),
                      submitted_at="2026-01-01T00:00:00+00:00")
    kafka.send(stack.tasks, task)
    committed(kafka, stack, 1)
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
    assert progress == sorted(progress) and len(set(progress)) > 2, "the progress moves on while it runs"
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
    worker(stack)
    n = len(high) + 1
    wait_until(lambda: len(kafka.results(stack.results)) == n, 120, f"{n} results")
    order = [r["task_uuid"] for r in kafka.results(stack.results)]
    assert order[0] == high[0]["task_uuid"], "the waiting high-priority task goes first"
    assert order.index(low["task_uuid"]) == FAIR_EVERY, "the low-priority task gets its turn under high load"


def test_job_longer_than_max_poll_interval_costs_no_rebalance(stack, kafka, short_audio):
    max_poll_ms = 3000
    counted = Counted()
    p = worker(stack, stack.write_config("short-poll.toml", kafka={"max_poll_interval_ms": max_poll_ms}))
    wait_until(lambda: p.daemon.member.generation() not in (None, -1), 30, "the group join")
    generation = p.daemon.member.generation()
    # Six seconds of scripted steps, whatever the machine's speed: twice max.poll.interval.ms.
    task = stack.task(stack.spool_copy(short_audio, scripted_engine.input_name("slow-6s")))
    kafka.send(stack.tasks, task)
    committed(kafka, stack, 1, 120)
    assert counted.value("uvrd_separation_seconds_sum") > max_poll_ms / 1000, \
        "the job must outlast max.poll.interval.ms to prove anything"
    assert p.daemon.member.generation() == generation, "no rebalance"
    assert counted.labelled("uvrd_tasks_total", "outcome") == {"succeeded": 1}
    assert [r["task_uuid"] for r in kafka.results(stack.results)] == [task["task_uuid"]]
