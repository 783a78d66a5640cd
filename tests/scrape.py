"""A daemon's /metrics, fetched over HTTP and parsed as Prometheus parses it."""

from __future__ import annotations

import requests
from prometheus_client.parser import text_string_to_metric_families

from uvrd.broker.loopback import free_port


def listen() -> str:
    """A metrics_listen of its own for one daemon: parallel tests never share a port."""
    return f"127.0.0.1:{free_port()}"


class Scraped:
    def __init__(self, text: str):
        self.samples = [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text)
                        for s in family.samples]

    def value(self, name: str, **labels) -> float:
        """The sum of *name*'s samples that carry *labels* (0 if none does)."""
        return sum(value for n, have, value in self.samples
                   if n == name and all(have.get(k) == v for k, v in labels.items()))

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """*name*'s samples by the value of *label*."""
        return {have[label]: value for n, have, value in self.samples if n == name and label in have}


def scrape(listen: str) -> Scraped:
    response = requests.get(f"http://{listen}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return Scraped(response.text)
