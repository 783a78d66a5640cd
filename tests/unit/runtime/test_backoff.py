import random

from uvrd.runtime.backoff import Backoff


def test_waits_double_up_to_the_most():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert b.waited == 9.5


def test_reset_starts_again_from_the_first_wait():
    b = Backoff(1.0, 60.0)
    b.next(), b.next()
    b.reset()
    assert (b.next(), b.waited) == (1.0, 1.0)


def test_a_limit_is_a_total_of_waiting():
    b = Backoff(2.0, 60.0, limit=10.0)
    waits = []
    while not b.exhausted():
        waits.append(b.next())
    assert waits == [2.0, 4.0, 8.0] and b.waited == 14.0


def test_jitter_stays_in_the_upper_half_of_the_planned_wait():
    b = Backoff(1.0, 300.0)
    rng = random.Random(7)
    for attempt in range(1, 12):
        ceiling = min(300.0, 2.0 ** (attempt - 1))
        assert all(ceiling / 2 <= b.jittered(attempt, rng) <= ceiling for _ in range(50))
