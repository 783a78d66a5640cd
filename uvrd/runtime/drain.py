"""The drain window: how long a stopping daemon may wait for its job in flight.

Under systemd the unit's ``TimeoutStopSec`` is the one source of truth: the
daemon asks systemd for its own unit's value at start-up and keeps a safety
margin for committing and closing its clients, so a ``systemctl edit``
drop-in moves both together.  Outside systemd (``uvrd dev``, a terminal) the
configured ``drain_timeout`` applies.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import structlog

log = structlog.get_logger("uvrd.drain")

_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3,
    "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
}


def parse_timespan(text: str) -> float | None:
    """systemd.time(7) spans as ``systemctl show`` prints them ("1min 30s"); None for infinity."""
    text = text.strip()
    if text in ("", "infinity"):
        return None
    total = 0.0
    pos = 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        if m.start() != pos:
            raise ValueError(f"not a time span: {text!r}")
        unit = m.group(2) or "s"
        if unit not in _SPAN_UNITS:
            raise ValueError(f"unknown time unit {unit!r} in {text!r}")
        total += float(m.group(1)) * _SPAN_UNITS[unit]
        pos = m.end()
    if pos != len(text):
        raise ValueError(f"not a time span: {text!r}")
    return total


def margin_for(stop_timeout: float) -> float:
    """Time kept back from TimeoutStopSec for the commit and closing the clients."""
    return min(max(5.0, 0.1 * stop_timeout), stop_timeout / 2)


def own_unit(cgroup_file: Path = Path("/proc/self/cgroup")) -> str | None:
    try:
        lines = cgroup_file.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        path = line.rpartition(":")[2]
        for part in reversed(path.split("/")):
            if part.endswith(".service"):
                return part
    return None


def unit_stop_timeout(unit: str) -> float | None:
    out = subprocess.run(
        ["systemctl", "show", "--property=TimeoutStopUSec", "--value", unit],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout
    return parse_timespan(out)


def drain_window(configured: float, environ: Mapping[str, str] | None = None) -> float:
    environ = os.environ if environ is None else environ
    if not environ.get("INVOCATION_ID"):
        return configured
    unit = own_unit()
    try:
        stop_timeout = unit_stop_timeout(unit) if unit else None
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log.warning("could not read TimeoutStopSec from systemd; using drain_timeout", unit=unit,
                    error=str(e), drain_timeout=configured)
        return configured
    if stop_timeout is None:
        # TimeoutStopSec=infinity: systemd never escalates, so the configured window rules.
        return configured
    window = stop_timeout - margin_for(stop_timeout)
    log.info("drain window from the unit's TimeoutStopSec", unit=unit, timeout_stop_s=stop_timeout,
             drain_window_s=window)
    return window
