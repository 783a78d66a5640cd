"""The ordered-offset ledger: whatever order deliveries finish in, a commit never passes an
unfinished record, carries every finished outcome below its point exactly once, in offset order."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition

from support import fuzz_examples
from uvrd.kafka.group_member import Claim
from uvrd.kafka.offset_ledger import OffsetLedger

TP = TopicPartition("results", 0)


@st.composite
def histories(draw):
    """Offsets with gaps (transaction markers), the order they finish in, and when commits happen."""
    gaps = draw(st.lists(st.integers(1, 3), min_size=1, max_size=30))
    offsets = [sum(gaps[:i + 1]) for i in range(len(gaps))]
    finish_order = draw(st.permutations(offsets))
    commit_after = draw(st.lists(st.booleans(), min_size=len(offsets), max_size=len(offsets)))
    return offsets, finish_order, commit_after


@settings(max_examples=fuzz_examples(), deadline=None)
@given(histories())
def test_commits_stop_below_the_lowest_unfinished_record_and_carry_each_outcome_once(history):
    offsets, finish_order, commit_after = history
    ledger = OffsetLedger(Claim(TP, generation=1))
    for offset in offsets:
        ledger.take(offset)
    committed_point, carried = 0, []
    for offset, commit in zip(finish_order, commit_after):
        ledger.finish(offset, f"outcome-{offset}")
        ready = ledger.ready()
        unfinished = ledger.unfinished()
        if ready is not None:
            assert not unfinished or ready.next_offset <= min(unfinished)
            assert ready.next_offset > committed_point
        if commit and ready is not None:
            carried.extend(ready.outcomes)
            committed_point = ready.next_offset
            ledger.committed(ready.next_offset)
    final = ledger.ready()
    if final is not None:
        carried.extend(final.outcomes)
        committed_point = final.next_offset
        ledger.committed(final.next_offset)
    assert carried == [f"outcome-{o}" for o in offsets], "every outcome once, in offset order"
    assert committed_point == offsets[-1] + 1 and len(ledger) == 0


def test_nothing_is_ready_while_the_lowest_record_runs():
    ledger = OffsetLedger(Claim(TP, generation=1))
    for offset in (5, 6, 8):
        ledger.take(offset)
    ledger.finish(6, "b")
    ledger.finish(8, "c")
    assert ledger.ready() is None and ledger.unfinished() == [5]
    ledger.finish(5, "a")
    ready = ledger.ready()
    assert ready.outcomes == ("a", "b", "c") and ready.next_offset == 9


def test_an_offset_is_taken_once_and_finished_once():
    ledger = OffsetLedger(Claim(TP, generation=1))
    ledger.take(3)
    assert ledger.taken(3) and ledger.taken(2) and not ledger.taken(4)
    with pytest.raises(ValueError):
        ledger.take(3)
    ledger.finish(3, "x")
    with pytest.raises(ValueError):
        ledger.finish(3, "y")
    with pytest.raises(ValueError):
        ledger.finish(9, "z")
    assert ledger.next_to_take == 4
    ledger.committed(4)
    assert len(ledger) == 0 and ledger.next_to_take == 4 and ledger.taken(3)
