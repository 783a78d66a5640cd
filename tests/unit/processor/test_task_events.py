"""The webhook events a task opted into, as the processor publishes them (uvrd/processor/task_events.py)."""

from __future__ import annotations

import json

from uvrd.messages import Task
from uvrd.processor.engine_protocol import Progress
from uvrd.processor.task_events import PROGRESS_EVERY_S, TaskEvents


def published(events=("started", "progress", "requeued"), hook="https://hooks.example/cb"):
    sent, now = [], [0.0]
    task = Task("t-1", "/spool/t-1.wav", hook, events=tuple(events))
    return TaskEvents(sent.append, "uvrd.events", task, clock=lambda: now[0]), sent, now


def bodies(sent) -> list[dict]:
    assert all(r.topic == "uvrd.events" and r.key == b"t-1" for r in sent)  # one key: in order per task
    return [json.loads(r.value) for r in sent]


def test_only_the_events_the_task_opted_into_go_out_and_only_with_a_hook():
    for events, hook in ((("progress",), "https://hooks.example/cb"), (("started",), None)):
        e, sent, _ = published(events, hook)
        e.started(1, "gpu1")
        e.requeued("stopping")
        assert sent == []


def test_progress_goes_out_at_most_every_interval():
    e, sent, now = published(("progress",))
    for step in range(30):
        now[0] = step * 1.0
        e.progress(Progress(step / 30, "separating"))
    got = bodies(sent)
    assert len(got) == 3 and [b["progress"] for b in got] == [0.0, PROGRESS_EVERY_S / 30, 2 * PROGRESS_EVERY_S / 30]
    assert got[0] == {**got[0], "task_uuid": "t-1", "hook_url": "https://hooks.example/cb", "event": "progress",
                      "step": "separating"}


def test_a_second_start_on_this_host_says_the_first_run_was_requeued():
    e, sent, _ = published()
    e.started(2, "gpu1")
    assert [(b["event"], b["attempt"]) for b in bodies(sent)] == [("requeued", 2), ("started", 2)]
