"""What ``uvrd api`` counts: the tasks each submission queued or was refused, and the dead letters
replayed.

Written by every gunicorn worker; in the api's multiprocess mode (multiprocess.py) each worker's
values go to files that the master adds up when scraped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from flask import Flask, request
from prometheus_client import Counter

from uvrd.outcomes import NotQueued, Produced, Queued, Unconfirmed

TASKS = Counter("uvrd_api_tasks", "Tasks submitted to the api, by outcome (queued, unconfirmed, not_queued, refused) "
                "and, for refused, the HTTP status", ["outcome", "reason"])
REPLAYS = Counter("uvrd_dead_letter_replays", "Dead-letter replays asked of the api, by answer (replayed, "
                  "already, not_replayable, unconfirmed) and the letter's stage", ["answer", "stage"])
# The requests that submit tasks: a refusal of one of these is a refused submission.
SUBMITTING = frozenset({"submit.create_task", "submit.generate"})


def counted(produce: Callable[..., Produced]) -> Callable[..., Produced]:
    """*produce*, its outcome (whether Kafka took the task) counted."""
    @functools.wraps(produce)
    def produce_counted(*args, **kwargs) -> Produced:
        return count(produce(*args, **kwargs))
    return produce_counted


def count(outcome: Produced) -> Produced:
    """One task's outcome (whether Kafka took it), counted."""
    TASKS.labels({Queued: "queued", Unconfirmed: "unconfirmed", NotQueued: "not_queued"}[type(outcome)], "").inc()
    return outcome


def replayed(answer: str, stage: str = "") -> None:
    REPLAYS.labels(answer, stage).inc()


def count_refusals(app: Flask) -> None:
    """A submission answered 4xx (a bad field, no token, too large) counts as refused, by its status."""
    @app.after_request
    def _refused(response):
        if request.endpoint in SUBMITTING and 400 <= response.status_code < 500:
            TASKS.labels("refused", str(response.status_code)).inc()
        return response
