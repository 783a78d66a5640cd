"""How much work waits, per priority, as ``GET /v1/queues`` tells it (boards/queues.py), read when
Prometheus scrapes: the api master serves it beside its workers' counts."""

from __future__ import annotations

from typing import Any, Protocol

import structlog
from kafka.errors import KafkaError
from prometheus_client.core import GaugeMetricFamily

log = structlog.get_logger("uvrd.metrics")


class QueueGauge(Protocol):
    """What reads the backlogs (uvrd.boards.queues.QueueGauge): the metrics only ask it, so that they
    depend on no board."""

    def read(self) -> dict[str, Any]: ...


class QueueCollector:
    def __init__(self, gauge: QueueGauge):
        self.gauge = gauge

    def describe(self):
        """The families without their values: registering must not wait for Kafka."""
        return list(_families())

    def collect(self):
        try:
            queues = self.gauge.read()
        except KafkaError as e:
            # No sample rather than a wrong zero: the graph shows a gap while Kafka does not answer.
            log.warning("queue backlog not read for the metrics", error=str(e) or type(e).__name__)
            return
        tasks, results = _families()
        for queue in queues["tasks"]:
            tasks.add_metric([str(queue["priority"])], queue["backlog"])
        results.add_metric([], queues["results"]["backlog"])
        yield tasks
        yield results


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (GaugeMetricFamily("uvrd_queue_backlog_tasks", "Tasks waiting for a processor, by priority "
                              "(5 is served first)", labels=["priority"]),
            GaugeMetricFamily("uvrd_queue_backlog_results", "Results waiting for their webhook", labels=[]))
