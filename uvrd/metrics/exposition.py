"""Serving ``/metrics`` on the address a daemon's ``metrics_listen`` names.

A port that is already taken is one warning, not a refusal to start: the daemon's work (tasks,
webhooks) matters more than watching it, and Prometheus shows the missing target as ``up == 0``.
Exiting 78 instead would stop a unit whose only fault is a clash with another exporter.
"""

from __future__ import annotations

import re

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from uvrd.runtime import drain

log = structlog.get_logger("uvrd.metrics")

# uvrd-processor@2.service: the instance number of a per-GPU unit.
_INSTANCE = re.compile(r"@(\d+)\.service$")


def instance_offset(unit: str | None) -> int:
    """How far a templated unit's port lies from the configured one: its instance number, so that
    ``uvrd-processor@0`` … ``@N`` on one host each get a port of their own."""
    found = _INSTANCE.search(unit or "")
    return int(found.group(1)) if found else 0


def address(listen: str, environ) -> tuple[str, int] | None:
    """(host, port) to serve on, the unit's instance added to the port; None when *listen* is empty."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    unit = drain.own_unit() if environ.get("INVOCATION_ID") else None
    return host.strip("[]"), int(port) + instance_offset(unit)


def serve(listen: str, environ, registry: CollectorRegistry = REGISTRY) -> tuple[str, int] | None:
    """Serve *registry* on a daemon thread; the address served on, or None (disabled, or not possible)."""
    where = address(listen, environ)
    if where is None:
        return None
    host, port = where
    try:
        start_http_server(port, addr=host, registry=registry)
    except (OSError, OverflowError) as e:  # taken, not this host's, or an instance past port 65535
        log.warning("metrics not served: the address cannot be used; the daemon runs without /metrics",
                    metrics_listen=f"{host}:{port}", error=getattr(e, "strerror", None) or str(e))
        return None
    log.info("metrics served", url=f"http://{host}:{port}/metrics")
    return where
