"""systemd's view of ``uvrd api``: READY once a task can be queued, WATCHDOG=1 only while every
worker can queue one, STOPPING on SIGTERM.  The api runs as a subprocess with a real
NOTIFY_SOCKET and WATCHDOG_USEC; the faults are real: a broker stopped with SIGSTOP, a worker
process stopped with SIGSTOP."""

from __future__ import annotations

import os
import signal
import time

from support import wait_until

# Pings every second (half of WatchdogSec); the api may be unready this long before they stop.  Long
# enough beside the probes' own time (each worker asked every second, two Kafka round trips each)
# that a loaded machine still shows pings well into an outage.
WATCHDOG_USEC = 2_000_000
READY_TIMEOUT_S = 6.0


def pinged_since(daemon, since: float) -> bool:
    return bool(daemon.notify.times("WATCHDOG=1", since))


def silent_for(daemon, seconds: float) -> bool:
    """No ping in the last *seconds* (and the daemon is still there)."""
    assert daemon.proc.poll() is None, daemon.log_text()[-3000:]
    return not pinged_since(daemon, time.monotonic() - seconds)


def test_ready_and_pings_only_while_kafka_answers(own_broker_stack):
    own_broker, stack = own_broker_stack
    try:
        own_broker.pause()  # Kafka away from the start: the api runs but cannot queue anything
        server = stack.start(watchdog_usec=WATCHDOG_USEC, ready_timeout=READY_TIMEOUT_S, workers=2)
        notify = server.daemon.notify
        wait_until(lambda: any(s.startswith("starting: /readyz: Kafka") for s in notify.statuses()), 30,
                   "a worker's answer that Kafka does not answer")
        assert "READY=1" not in notify.lines() and not notify.times("WATCHDOG=1")
        assert server.get("/healthz").status_code == 200

        own_broker.resume()
        server.daemon.wait_ready(60)
        wait_until(lambda: len(notify.times("WATCHDOG=1")) >= 2, 10, "watchdog pings")
        assert server.daemon.events("api ready")

        paused = time.monotonic()
        own_broker.pause()
        # Pings go on for ready_timeout (a blip is ridden out), then stop.
        wait_until(lambda: silent_for(server.daemon, 2.5), READY_TIMEOUT_S + 20, "the pings to stop")
        assert pinged_since(server.daemon, paused + 2), "pings went on while the outage was short"
        # Kafka itself, or the producer's round trip to it, whichever the worker asked first (its answer
        # can come after the pings stopped: each of those checks waits a few seconds for Kafka).
        wait_until(lambda: any(s.startswith("not ready: /readyz: ") and "Kafka" in s for s in notify.statuses()),
                   20, "STATUS= saying that Kafka does not answer")
        assert server.daemon.events("api not ready for longer than api.ready_timeout: watchdog pings stop, "
                                    "systemd restarts it")

        resumed = time.monotonic()
        own_broker.resume()
        wait_until(lambda: pinged_since(server.daemon, resumed), 30, "the pings to resume")
        wait_until(lambda: notify.statuses()[-1] == "ready", 10, "STATUS=ready")

        server.daemon.signal(signal.SIGTERM)
        assert server.daemon.wait_exit(30) == 0
        assert "STOPPING=1" in notify.lines()
    finally:
        own_broker.resume()


def test_a_wedged_worker_stops_the_pings_while_the_other_serves(api_stack):
    server = api_stack.start(watchdog_usec=WATCHDOG_USEC, ready_timeout=READY_TIMEOUT_S, workers=2)
    server.daemon.wait_ready(60)
    workers = wait_until(lambda: [e["pid"] for e in server.daemon.events("api worker ready")][:2]
                         if len(server.daemon.events("api worker ready")) >= 2 else None, 30, "both workers")
    wait_until(lambda: len(server.daemon.notify.times("WATCHDOG=1")) >= 2, 10, "watchdog pings")

    os.kill(workers[0], signal.SIGSTOP)  # its loop and threads stand still; the master and the other go on
    try:
        wait_until(lambda: silent_for(server.daemon, 2.5), READY_TIMEOUT_S + 15, "the pings to stop")
        assert server.get("/healthz").status_code == 200, "the other worker still serves"
    finally:
        resumed = time.monotonic()
        os.kill(workers[0], signal.SIGCONT)
    wait_until(lambda: pinged_since(server.daemon, resumed), 20, "the pings to resume")
    assert server.daemon.proc.poll() is None
