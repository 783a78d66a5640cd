"""``uvrd uploader`` as a real process, for what only a process shows: a real SIGTERM, a SIGKILL
with deliveries in flight, a member frozen (SIGSTOP) past its session.  Everything else the
uploader does is tested in the test process, in tests/service/test_uploader.py."""

from __future__ import annotations

import signal

from peers import Hanger
from support import wait_until
from uploader_checks import (committed, delivered_once, outcomes, receiver,  # noqa: F401 (a fixture)
                             result_for, webhook_counts)

# Bounds on waits, so that a failing test ends; none of them is what a test checks.
READY_S = 60
SETTLE_S = 30
EXIT_S = 30


def test_sigterm_lets_the_deliveries_in_flight_finish_and_commits_them(stack, kafka):
    """A real SIGTERM (the signal handler, not a stop recorded in-process) with four deliveries in
    flight at once: the receiver answers only after the uploader says it is draining them, and all
    four are delivered, committed and recorded once, and the uploader exits 0."""
    hanger = Hanger()
    try:
        up = stack.start("uploader")
        up.wait_ready(READY_S)
        results = [result_for(stack, hanger.url()) for _ in range(4)]
        for result in results:
            kafka.send(stack.results, result)
        # All four reached the receiver while none was answered: they are in flight together.
        wait_until(lambda: len(hanger.paths()) == len(results), SETTLE_S, "all four deliveries in flight")
        signalled = up.signal(signal.SIGTERM)
        up.notify.wait_for(lambda line: line.startswith(f"STATUS=draining: delivering {len(results)} webhooks"),
                           SETTLE_S, "the drain of the four deliveries", since=signalled)
        hanger.release()
        assert up.wait_exit(EXIT_S) == 0
        assert committed(stack, kafka) == len(results)
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
        assert hanger.paths() == ["/hook"] * len(results), "each delivered once, none redone"
    finally:
        hanger.close()


def test_sigkill_with_deliveries_in_flight_duplicates_and_loses_no_record(stack, kafka, receiver):
    """Deliveries finished above an unfinished one wait uncommitted; after a SIGKILL the next uploader
    (the same unit, so the same transactional id) delivers them again, and every result still has
    exactly one status record and no dead letter."""
    hanger = Hanger()
    try:
        config = stack.write_config("kill.toml", uploader={"timeout": 30, "max_attempts": 2})
        unit = {"UVRD_UPLOADER_TRANSACTIONAL_ID": f"{stack.group}-the-uploader-unit"}
        first = stack.start("uploader", config=config, env=unit)
        first.wait_ready(60)
        before = [result_for(stack, receiver.url) for _ in range(3)]
        stuck = result_for(stack, hanger.url())
        after = [result_for(stack, receiver.url) for _ in range(6)]
        results = [*before, stuck, *after]
        for result in results:
            kafka.send(stack.results, result)
        wait_until(lambda: len(receiver.requests) == len(before) + len(after) and hanger.paths(), 60,
                   "every healthy webhook, and the hanging one in flight")
        wait_until(lambda: committed(stack, kafka) == len(before), 30, "the results below the hanging one committed")
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait_exit(10) == -signal.SIGKILL
        hanger.release()
        second = stack.start("uploader", config=config, env=unit)
        second.wait_ready(60)
        wait_until(lambda: committed(stack, kafka) == len(results), 90, "every result committed")
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
        counts = webhook_counts(receiver)
        assert [counts[r["task_uuid"]] for r in before] == [1] * len(before), "committed: not delivered again"
        assert [counts[r["task_uuid"]] for r in after] == [2] * len(after), "uncommitted: delivered again"
        assert hanger.paths() == ["/hook", "/hook"]
    finally:
        hanger.close()


def assigned_partitions(daemon) -> list | None:
    """What the daemon's last rebalance gave it (None before its first)."""
    events = daemon.events("partitions assigned")
    return events[-1]["partitions"] if events else None


def test_an_uploader_frozen_past_its_session_lets_go_and_changes_no_outcome(stack, kafka, receiver):
    """Two uploaders; the one holding the partition is frozen (SIGSTOP) with deliveries in flight,
    past its session: the other takes over and redoes what was uncommitted, and the frozen one,
    thawed, drops its outcomes.  Each result has exactly one status record.  (A rebalance that both
    members take part in is tested in-process: tests/service/test_uploader.py.)"""
    hanger = Hanger()
    try:
        config = stack.write_config("pair.toml", uploader={"timeout": 60})
        first, second = stack.start("uploader", config=config), stack.start("uploader", config=config)
        first.wait_ready(READY_S)
        second.wait_ready(READY_S)
        wait_until(lambda: assigned_partitions(first) is not None and assigned_partitions(second) is not None
                   and bool(assigned_partitions(first)) != bool(assigned_partitions(second)), 60,
                   "the partition given to one of the two")
        owner, other = (first, second) if assigned_partitions(first) else (second, first)
        results = [result_for(stack, hanger.url()), *[result_for(stack, receiver.url) for _ in range(5)]]
        for result in results:
            kafka.send(stack.results, result)
        # Frozen only with the hanging delivery in flight, or it would have nothing to let go.
        wait_until(lambda: len(receiver.requests) == 5 and hanger.paths(), SETTLE_S, "deliveries in flight")
        owner.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: assigned_partitions(other), 60, "the other uploader to take the partition")
            hanger.release()
            wait_until(lambda: committed(stack, kafka) == len(results), 60, "every result committed")
        finally:
            owner.proc.send_signal(signal.SIGCONT)
        try:
            wait_until(lambda: [e for e in owner.log_events() if e["event"].startswith("partition moved to another")],
                       60, "the thawed one to let go")
        except AssertionError as e:
            raise AssertionError(f"{e}; the owner ({'first' if owner is first else 'second'}) said:\n"
                                 + owner.log_text()[-4000:]) from None
        assert committed(stack, kafka) == len(results)
        assert outcomes(stack, kafka, [r["task_uuid"] for r in results]) == delivered_once(results)
        assert set(webhook_counts(receiver)) == {r["task_uuid"] for r in results[1:]}
        assert first.proc.poll() is None and second.proc.poll() is None
    finally:
        hanger.close()
