import os

from support import NotifySocket, wait_until
from uvrd.runtime.notify import Notifier


def test_outside_systemd_it_is_a_silent_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notifier()
    n.ready("idle"), n.status("x"), n.watchdog(), n.stopping("y")
    assert not n.enabled and n.watchdog_interval is None


def test_messages_reach_the_socket(tmp_path, monkeypatch):
    sock = NotifySocket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        n = Notifier()
        assert n.watchdog_interval == 1.0
        n.ready("idle")
        n.status("idle")  # unchanged: not sent again
        n.status("separating ünïcode task")
        n.watchdog()
        n.watchdog()  # within the interval: not sent again
        n.stopping("draining")
        wait_until(lambda: "STOPPING=1" in sock.lines(), 5, "STOPPING")
        assert sock.lines() == ["READY=1", "STATUS=idle", "STATUS=separating ünïcode task", "WATCHDOG=1",
                                "STOPPING=1", "STATUS=draining"]
    finally:
        sock.close()


def test_a_vanished_socket_never_raises(tmp_path, monkeypatch):
    sock = NotifySocket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", sock.path)
    n = Notifier()
    sock.close()
    os.unlink(sock.path)
    n.ready("idle")
    n.status("still fine")


def test_watchdog_pid_for_another_process_disables_pings(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    n = Notifier()
    assert n.watchdog_interval is None
