"""Where a task stands: records from several writers merge, and a state never goes back."""

from uvrd.boards import status


def test_a_later_state_overrides_and_keeps_what_earlier_writers_knew():
    merged = status.merge({"state": "queued", "submitted_at": "a"}, {"state": "processing", "worker": "w"})
    assert merged == {"state": "processing", "submitted_at": "a", "worker": "w"}


def test_a_late_older_state_only_fills_gaps():
    current = {"state": "succeeded", "finished_at": "f"}
    merged = status.merge(current, {"state": "processing", "worker": "w", "finished_at": "stale"})
    assert merged == {"state": "succeeded", "finished_at": "f", "worker": "w"}


def test_the_first_record_is_taken_as_it_is():
    assert status.merge(None, {"state": "queued"}) == {"state": "queued"}


def test_a_replay_starts_the_next_cycle_keeping_only_when_the_task_was_submitted():
    failed = {"state": "failed", "submitted_at": "s", "error_message": "no input", "finished_at": "f"}
    merged = status.merge(failed, {"state": "queued", "replay": 1, "replayed_at": "r"})
    assert merged == {"state": "queued", "replay": 1, "replayed_at": "r", "submitted_at": "s"}
    # Within the cycle the usual order holds; a late record of the earlier cycle only fills gaps.
    delivered = status.merge(merged, {"state": "delivered", "replay": 1})
    delivered = status.merge(delivered, {"state": "succeeded", "replay": 1})
    assert delivered["state"] == "delivered"
    assert status.merge(delivered, {"state": "delivery_failed", "delivery_error": "old"})["state"] == "delivered"
