"""Keys take turns: a key that starts waiting waits at most one task of each key ahead of it."""

from uvrd.processor.key_turns import NO_KEY, KeyTurns


def test_keys_with_tasks_waiting_are_served_in_turns():
    turns = KeyTurns()
    picks = [turns.next({"a": 1, "b": 1, "c": 1}) for _ in range(6)]
    assert picks == ["a", "b", "c", "a", "b", "c"]


def test_a_key_that_starts_waiting_joins_the_back_of_the_line():
    turns = KeyTurns()
    assert [turns.next(["a"]) for _ in range(3)] == ["a", "a", "a"], "one key: its tasks one after another"
    assert [turns.next(["a", "b"]) for _ in range(4)] == ["a", "b", "a", "b"]
    assert turns.next(["a", "b", NO_KEY]) == "a"
    assert turns.next(["a", "b", NO_KEY]) == "b"
    assert turns.next(["a", "b", NO_KEY]) == NO_KEY, "the tasks without a key take their turn"


def test_a_key_saves_up_no_turns_while_it_has_nothing_queued():
    turns = KeyTurns()
    assert turns.next(["a", "b"]) == "a"
    assert turns.next(["b"]) == "b"
    assert turns.next(["b"]) == "b"
    # a is back: it joins the back of the line, behind b, however long ago its last turn was.
    assert [turns.next(["a", "b"]) for _ in range(3)] == ["b", "a", "b"]


def test_nothing_waiting_is_no_turn():
    assert KeyTurns().next([]) is None
