"""The dead letters a daemon committed: the processor's (failed and refused tasks) and the uploader's
(given-up webhooks, unreadable results) under one name, told apart by ``stage``, as the letters'
own ``uvrd-stage`` header tells them apart."""

from __future__ import annotations

from prometheus_client import Counter

DEAD_LETTERS = Counter("uvrd_dead_letters", "Dead letters written, by the stage that wrote them and why",
                       ["stage", "reason"])


def written(stage: str, reason: str) -> None:
    DEAD_LETTERS.labels(stage, reason).inc()
