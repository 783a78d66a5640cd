"""The ports uvrd's local servers are started on (the single-host broker's, the demo's, the tests')."""

from __future__ import annotations

from pathlib import Path

from uvrd.broker.loopback import free_port


def test_free_ports_come_from_below_the_range_outgoing_connections_draw_from():
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(1024 <= free_port() < low for _ in range(20))
