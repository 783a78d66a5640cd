"""Settings for clients of an in-memory Tansu broker (:class:`uvrd.broker.tansu.TansuBroker`): ``make
run``, ``uvrd dev`` and the tests."""

from __future__ import annotations

# Consumer-group timeouts for clients of this broker: Tansu holds a JoinGroup round open for long with
# production values (a first task waited 25 s in `queued`), and nothing here needs their patience.
GROUP_SETTINGS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 8000}
