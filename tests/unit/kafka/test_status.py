"""Where a task stands: records from several writers merge, and a state never goes back."""

from uvrd.kafka import status


def test_a_later_state_overrides_and_keeps_what_earlier_writers_knew():
    merged = status.merge({"state": "queued", "submitted_at": "a"}, {"state": "processing", "worker": "w"})
    assert merged == {"state": "processing", "submitted_at": "a", "worker": "w"}


def test_a_late_older_state_only_fills_gaps():
    current = {"state": "succeeded", "finished_at": "f"}
    merged = status.merge(current, {"state": "processing", "worker": "w", "finished_at": "stale"})
    assert merged == {"state": "succeeded", "finished_at": "f", "worker": "w"}


def test_the_first_record_is_taken_as_it_is():
    assert status.merge(None, {"state": "queued"}) == {"state": "queued"}
