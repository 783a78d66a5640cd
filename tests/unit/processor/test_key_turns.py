"""Keys take turns by audio seconds (deficit round robin): a key that starts waiting waits at most one
turn of each key ahead of it, and keys kept waiting are served the same seconds, not the same tasks."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from support import fuzz_examples
from uvrd.processor.key_turns import MIN_TASK_SECONDS, NO_KEY, QUANTUM_SECONDS, KeyTurns, cost


def unknown(*lanes: str) -> dict[str, float | None]:
    """Keys whose next task's length is not said: one quantum each."""
    return dict.fromkeys(lanes)


def test_keys_with_tasks_waiting_are_served_in_turns():
    turns = KeyTurns()
    picks = [turns.next(unknown("a", "b", "c")) for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"], "tasks of unknown length: one each per turn"


def test_a_key_that_starts_waiting_joins_the_back_of_the_line():
    turns = KeyTurns()
    assert [turns.next(unknown("a")) for _ in range(3)] == ["a", "a", "a"], "one key: its tasks one after another"
    assert [turns.next(unknown("a", "b")) for _ in range(4)] == ["a", "b", "a", "b"]
    assert turns.next(unknown("a", "b", NO_KEY)) == "a"
    assert turns.next(unknown("a", "b", NO_KEY)) == "b"
    assert turns.next(unknown("a", "b", NO_KEY)) == NO_KEY, "the tasks without a key take their turn"


def test_a_key_saves_up_no_turns_while_it_has_nothing_queued():
    turns = KeyTurns()
    assert turns.next(unknown("a", "b")) == "a"
    assert turns.next(unknown("b")) == "b"
    assert turns.next(unknown("b")) == "b"
    # a is back: it joins the back of the line, behind b, however long ago its last turn was.
    assert [turns.next(unknown("a", "b")) for _ in range(3)] == ["b", "a", "b"]


def test_nothing_waiting_is_no_turn():
    assert KeyTurns().next({}) is None


def test_a_turn_runs_the_tasks_that_fit_in_a_quantum():
    turns = KeyTurns(quantum=60)
    # a's songs are 20 s: three per turn; b's are 60 s: one.
    assert [turns.next({"a": 20, "b": 60}) for _ in range(8)] == ["a", "a", "a", "b", "a", "a", "a", "b"]


def test_a_task_longer_than_a_quantum_waits_the_rounds_it_needs():
    turns = KeyTurns(quantum=60)
    # b's 12-hour task waits 720 rounds of a's 60 s, counted at once, not looped through one by one.
    picks = [turns.next({"a": 60, "b": 43200}) for _ in range(722)]
    assert picks.index("b") == 720 and picks.count("b") == 1
    alone = KeyTurns(quantum=60)
    assert alone.next({"b": 43200}) == "b", "a key alone runs whatever its length"


def test_a_task_not_run_is_charged_once():
    turns = KeyTurns(quantum=60)
    assert turns.next({"a": 60, "b": 60}) == "a"
    turns.refund("a", 60)  # put back: it waits again, first of a's
    assert turns.next({"a": 60, "b": 60}) == "a", "still a's turn: the task it had is paid for once"
    assert turns.next({"a": 60, "b": 60}) == "b"


def test_lengths_not_said_or_near_empty_count_as_a_quantum_or_the_least():
    assert cost(None) == QUANTUM_SECONDS and cost(float("nan")) == QUANTUM_SECONDS
    assert cost(0.001) == MIN_TASK_SECONDS and cost(250.0) == 250.0


def serve(queues: dict[str, deque[float | None]], picks: int, quantum: float = QUANTUM_SECONDS):
    """Run *picks* turns over *queues* (each key's task lengths, in order), while every key has tasks:
    the seconds and tasks served per key after each pick."""
    turns = KeyTurns(quantum)
    seconds = dict.fromkeys(queues, 0.0)
    tasks = dict.fromkeys(queues, 0)
    for _ in range(picks):
        if not all(queues.values()):
            return
        lane = turns.next({k: q[0] for k, q in queues.items()})
        assert lane is not None
        seconds[lane] += cost(queues[lane].popleft(), quantum)
        tasks[lane] += 1
        yield seconds, tasks


@settings(max_examples=fuzz_examples(200), deadline=None)
@given(st.lists(st.lists(st.one_of(st.none(), st.floats(0, 900)), min_size=1, max_size=8), min_size=2, max_size=5),
       st.sampled_from([10.0, 60.0, 300.0]))
def test_over_a_long_flood_every_waiting_key_is_served_the_same_seconds(patterns, quantum):
    """Each key repeats its pattern of lengths (unknown ones included) for as long as the flood lasts:
    at every point, any two keys' served seconds differ by at most the longest task plus a quantum."""
    queues = {f"k{i}": deque(pattern * (4000 // len(pattern))) for i, pattern in enumerate(patterns)}
    longest = max(cost(s, quantum) for pattern in patterns for s in pattern)
    served = None
    for served, _ in serve(queues, 600, quantum):
        assert max(served.values()) - min(served.values()) <= longest + quantum
    assert served is not None


@pytest.mark.parametrize("short,long", [(30.0, 300.0), (5.0, 60.0), (59.0, 61.0)])
def test_a_key_of_short_tasks_gets_more_tasks_not_more_seconds(short, long):
    queues = {"long": deque([long] * 2000), "short": deque([short] * 2000)}
    *_, (seconds, tasks) = serve(queues, 1000)
    assert abs(seconds["long"] - seconds["short"]) <= long + QUANTUM_SECONDS
    assert tasks["short"] >= tasks["long"] * (long / short) * 0.9, tasks
