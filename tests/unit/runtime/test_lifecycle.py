"""The lifecycle's phases, on a fake clock: SIGTERM drains, the window or a second signal abandons."""

from __future__ import annotations

import os
import signal

from support import wait_until
from devtools.notifylistener import NotifyListener
from uvrd.runtime.lifecycle import Lifecycle, Phase
from uvrd.runtime.notify import Notifier


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lifecycle(window: float = 30.0) -> tuple[Lifecycle, Clock]:
    clock = Clock()
    return Lifecycle(Notifier(), window, clock=clock), clock


def deliver(lc: Lifecycle, signum: int) -> None:
    """As the kernel would: the handler records, the next turn acts."""
    lc._record(signum, None)
    lc.process_signals()


def test_sigterm_drains_until_the_window_ends_then_abandons():
    lc, clock = lifecycle(30.0)
    assert lc.phase is Phase.RUNNING and not lc.stopping
    deliver(lc, signal.SIGTERM)
    assert lc.phase is Phase.DRAINING and lc.stopping and not lc.must_abandon()
    clock.now += 29.5
    assert lc.phase is Phase.DRAINING and round(lc.drain_left(), 1) == 0.5
    clock.now += 0.5
    assert lc.phase is Phase.ABANDONING and lc.must_abandon() and lc.drain_left() == 0


def test_a_second_signal_abandons_at_once_and_a_third_changes_nothing():
    lc, _clock = lifecycle(30.0)
    deliver(lc, signal.SIGINT)
    deliver(lc, signal.SIGTERM)
    assert lc.phase is Phase.ABANDONING and lc.quick
    deadline = lc.deadline
    deliver(lc, signal.SIGTERM)
    assert lc.phase is Phase.ABANDONING and lc.deadline == deadline, "the drain window is not restarted"


def test_a_signal_only_records_until_the_loop_turns():
    lc, _ = lifecycle()
    lc._record(signal.SIGTERM, None)
    assert lc.phase is Phase.RUNNING, "the handler itself does nothing"
    lc.tick("idle", lambda: True)
    assert lc.phase is Phase.DRAINING


def test_sighup_is_ignored():
    lc, _ = lifecycle()
    deliver(lc, signal.SIGHUP)
    assert lc.phase is Phase.RUNNING


def test_healthy_is_asked_only_when_a_watchdog_ping_is_due(tmp_path, monkeypatch):
    """The broker's health check is a Kafka request: asked once per ping, not once per loop turn."""
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
        monkeypatch.setenv("WATCHDOG_USEC", "60000000")  # a ping due every 30 s
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        lc, _ = lifecycle()
        asked = []
        for _ in range(5):
            lc.tick("idle", lambda: asked.append(1) or True)
        assert asked == [1], "asked for the first ping only; the next is 30 s away"
        wait_until(lambda: "WATCHDOG=1" in listener.lines(), 5, "the ping")
        assert listener.lines().count("WATCHDOG=1") == 1
    finally:
        listener.close()


def test_an_unhealthy_daemon_is_asked_again_and_sends_no_ping(tmp_path, monkeypatch):
    listener = NotifyListener(tmp_path / "notify.sock")
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
        monkeypatch.setenv("WATCHDOG_USEC", "60000000")
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        lc, _ = lifecycle()
        asked = []
        for _ in range(3):
            lc.tick("idle", lambda: asked.append(1) and False)
        lc.tick("stuck", lambda: False)
        wait_until(lambda: "STATUS=stuck" in listener.lines(), 5, "the last status")
        assert len(asked) == 3 and "WATCHDOG=1" not in listener.lines(), "a ping is still due while unhealthy"
    finally:
        listener.close()


def test_outside_systemd_health_is_never_asked(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    lc, _ = lifecycle()
    asked = []
    lc.tick("idle", lambda: asked.append(1) or True)
    assert asked == []
