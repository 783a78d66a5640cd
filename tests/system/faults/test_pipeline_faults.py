"""The whole pipeline under faults: nothing accepted is lost, duplicated or left stuck.

`make test` runs a moderate batch with a fixed seed; `make faults` a large one
(UVRD_FAULT_TASKS, UVRD_FAULT_SEED).  The run prints one summary line.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from injector import FaultInjector
from invariants import read_outcomes, summarize
from pipeline import WATCHDOG_S, Pipeline, gone, sample_audio
from scrape import scrape
from supervisor import Supervisor
from support import KafkaView, wait_until
from uvrd.broker.tansu import TansuBroker

TASKS = int(os.environ.get("UVRD_FAULT_TASKS", "24"))
SEED = int(os.environ.get("UVRD_FAULT_SEED", "1"))
# Submissions spread over about this many seconds, faults going on throughout and after.
SUBMIT_SPREAD_S = float(os.environ.get("UVRD_FAULT_SPREAD", str(max(20.0, TASKS * 0.6))))
SETTLE_S = 180 + TASKS * 2.0


@pytest.fixture
def own_broker(tmp_path):
    """Its own broker: the suite pauses it, which must not stall other tests."""
    with TansuBroker(log_path=tmp_path / "broker.log") as b:
        yield b


@pytest.fixture
def pipeline(tmp_path, own_broker, model_dir):
    p = Pipeline(tmp_path, own_broker, model_dir, processors=2)
    yield p
    # Whatever ended the test, nothing may restart a daemon while they are closed.
    try:
        for loop in p.loops:
            loop.stop()
    finally:
        p.close()


@pytest.mark.timeout(int(600 + TASKS * 12))
def test_every_accepted_task_ends_in_exactly_one_outcome_under_faults(pipeline, tmp_path):
    log = open(tmp_path / "faults.log", "a")

    def note(line: str) -> None:
        log.write(f"{time.strftime('%H:%M:%S')} {line}\n")
        log.flush()

    rng = random.Random(SEED)
    audio = sample_audio(tmp_path / "take.wav", seconds=1.0)
    pipeline.start_all()
    supervisor = Supervisor(pipeline, WATCHDOG_S, note)
    injector = FaultInjector(pipeline, supervisor, SEED + 1, note)
    pipeline.loops = [injector, supervisor]
    supervisor.start()
    injector.start()
    kafka = KafkaView(pipeline.broker.bootstrap)
    accepted: list[str] = []
    refused = 0
    try:
        while len(accepted) < TASKS:
            task_uuid, why = pipeline.submit(audio)
            if task_uuid:
                accepted.append(task_uuid)
            else:
                refused += 1
                note(f"submission not accepted: {why}")
            time.sleep(rng.uniform(0, 2 * SUBMIT_SPREAD_S / TASKS))
        note(f"all {TASKS} tasks accepted")
        # Faults go on while the backlog drains, then stop so that everything can heal.
        deadline = time.monotonic() + SUBMIT_SPREAD_S
        while time.monotonic() < deadline:
            if all(read_outcomes(pipeline, kafka, with_topics=False).final(t) for t in accepted):
                break
            time.sleep(2)
        injector.stop()
        note("faults stopped")
        wait_until(lambda: all(read_outcomes(pipeline, kafka, with_topics=False).final(t) for t in accepted),
                   SETTLE_S, "every accepted task to reach an outcome", interval=2)
    except AssertionError:
        pass  # the summary below says which tasks are stuck
    finally:
        injector.stop()
    outcomes = read_outcomes(pipeline, kafka)
    # A failed task is dead-lettered and keeps its input for a replay, until spool_retention.
    failed = {r.get("task_uuid") for r in kafka.results(pipeline.topics.results) if not r.get("success")}
    kafka.close()

    # A succeeded task's input is gone at once; stems and killed jobs' work dirs go with retention.
    def leftovers() -> list[str]:
        return sorted([f"spool/{e.name}" for e in pipeline.spool.iterdir() if e.stem in set(accepted) - failed] +
                      [f"output/{e.name}" for e in pipeline.output.iterdir() if e.name != ".attempts"])
    try:
        wait_until(lambda: not leftovers(), 60, "retention to sweep the output", interval=1)
    except AssertionError:
        pass
    orphans = leftovers()
    # Uploads the api was killed before producing: unclaimed, they go with spool_retention.
    unclaimed = len([e for e in pipeline.spool.iterdir() if e.stem not in accepted])
    # What Prometheus sees once the faults have healed: each daemon serves /metrics again on its own port
    # after its kills and restarts, and the api's backlog per priority is empty.
    try:
        wait_until(lambda: (s := scrape(pipeline.metrics["api"])).labelled("uvrd_queue_backlog_tasks", "priority")
                   == {p: 0 for p in "54321"} and s.value("uvrd_queue_backlog_results") == 0, 60, "empty queues")
    except AssertionError:
        pass  # the assertion below says what waits
    scraped = {name: scrape(listen) for name, listen in pipeline.metrics.items()}

    supervisor.stop()
    exits = {name: pipeline.stop(name) for name in pipeline.components}
    left_running = sorted(pid for pid in pipeline.all_pids() if not gone(pid))

    faults = {**injector.counts, **supervisor.counts}
    summary = summarize(accepted, refused, outcomes, faults, SEED)
    unacknowledged = len(set(outcomes.deliveries) - set(accepted))
    line = summary.line() + f" unacknowledged={unacknowledged} unclaimed_uploads={unclaimed}"
    print("\n" + line)
    Path(os.environ.get("UVRD_FAULT_SUMMARY", tmp_path / "summary.txt")).write_text(line + "\n")
    log.close()

    assert summary.lost == summary.duplicated == summary.stuck == 0, "\n".join([line, *summary.problems[:20]])
    assert injector.unexpected_exits + supervisor.unexpected_exits == [], "a daemon exited on its own"
    assert exits == {name: 0 for name in pipeline.components}, f"a clean stop exits 0: {exits}"
    assert left_running == [], "no process outlives its daemon"
    assert orphans == [], "nothing on disk outlives its retention"
    assert sum(faults.values()) >= TASKS // 4, f"too few faults to prove anything: {faults}"
    assert scraped["api"].labelled("uvrd_queue_backlog_tasks", "priority") == {p: 0 for p in "54321"}
    assert scraped["api"].value("uvrd_queue_backlog_results") == 0
