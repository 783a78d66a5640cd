"""How long a consuming daemon's stop has been draining (processor, uploader).

A gauge that grows while the drain lasts, not a histogram observed at its end: the process exits
with its drain, before any scrape could read a finished one.  The last value scraped before the
target went away is how long the drain took (to within a scrape interval); the window beside it
is how long it could have taken.
"""

from __future__ import annotations

from prometheus_client import Gauge

from uvrd.runtime.lifecycle import Lifecycle

ELAPSED = Gauge("uvrd_drain_elapsed_seconds", "Seconds since a stop began draining the daemon (0 while running)")
WINDOW = Gauge("uvrd_drain_window_seconds", "The longest a drain may last before work in flight is abandoned")


def watch(lifecycle: Lifecycle) -> None:
    WINDOW.set(lifecycle.drain_window)
    ELAPSED.set_function(lambda: 0.0 if lifecycle.stop_requested_at is None else
                         lifecycle.clock() - lifecycle.stop_requested_at)
