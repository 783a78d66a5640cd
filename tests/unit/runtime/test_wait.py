"""The one wait: why it ends, and that every turn ticks."""

from __future__ import annotations

import signal

from uvrd.runtime.deadline import Deadline
from uvrd.runtime.lifecycle import Lifecycle
from uvrd.runtime.notify import Notifier
from uvrd.runtime.wait import Runtime, Why


def runtime(window: float = 30.0) -> tuple[Runtime, list]:
    turns = []
    lc = Lifecycle(Notifier(), window)
    rt = Runtime(lc, status=lambda: turns.append("status") or "idle", healthy=lambda: True,
                 sleep=lambda s: turns.append(("slept", round(s, 3))))
    return rt, turns


def test_it_ends_with_what_until_answers_and_ticks_every_turn():
    rt, turns = runtime()
    answers = iter([None, 0, "record"])
    woke = rt.wait(until=lambda: next(answers), through_drain=False, turn_ms=20)
    assert woke.done and woke.value == "record"
    assert turns.count("status") == 3 and turns.count(("slept", 0.02)) == 2


def test_the_budget_ends_it():
    rt, _ = runtime()
    woke = rt.wait(until=lambda: None, budget=Deadline.after(0.0), through_drain=True)
    assert woke.why is Why.BUDGET and woke.value is None


def test_a_stop_ends_an_idle_wait_but_not_one_that_goes_on_through_the_drain():
    rt, _ = runtime()
    rt.lifecycle._record(signal.SIGTERM, None)
    assert rt.wait(until=lambda: None, through_drain=False).why is Why.STOPPED
    answers = iter([None, "done"])
    assert rt.wait(until=lambda: next(answers), through_drain=True, turn_ms=1).value == "done"


def test_the_end_of_the_drain_window_ends_every_wait():
    rt, _ = runtime(window=0.0)
    rt.lifecycle._record(signal.SIGTERM, None)
    assert rt.wait(until=lambda: "never asked", through_drain=True).why is Why.ABANDON


def test_pause_says_whether_it_waited_the_whole_time():
    rt, _ = runtime()
    assert rt.pause(0.0, through_drain=False) is True
    rt.lifecycle._record(signal.SIGTERM, None)
    assert rt.pause(5.0, through_drain=False) is False
