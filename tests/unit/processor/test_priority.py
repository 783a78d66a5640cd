"""Which level a processor serves next: the highest with a backlog, with a fair turn for the rest."""

from uvrd.processor.priority import FAIR_EVERY, PriorityChooser

TOPICS = {"tasks": 0, "tasks.p1": 1, "tasks.p2": 2}


def test_the_highest_level_with_a_backlog_goes_first():
    c = PriorityChooser(TOPICS)
    assert c.choose({0: 3, 1: 0, 2: 5}) == 2
    assert c.choose({0: 3, 1: 1, 2: 0}) == 1
    assert c.choose({0: 0, 1: 0, 2: 0}) is None


def test_a_steady_high_stream_cannot_starve_a_lower_level():
    c = PriorityChooser(TOPICS)
    backlog = {0: 10, 2: 10}
    picks = []
    for _ in range(2 * (FAIR_EVERY + 1)):
        c._waiting = backlog
        level = c.choose(backlog)
        picks.append(level)
        c.served({0: "tasks", 2: "tasks.p2"}[level])
    assert picks.count(0) == 2 and picks[:FAIR_EVERY] == [2] * FAIR_EVERY and picks[FAIR_EVERY] == 0


def test_a_fair_turn_chosen_but_not_taken_stays_owed():
    """The lower level's record did not come in the poll after it was chosen (its partition had been
    paused): a higher level's task ran instead, and the lower level is chosen again next."""
    c = PriorityChooser(TOPICS)
    c._waiting = backlog = {0: 1, 2: 10}
    for _ in range(FAIR_EVERY):
        assert c.choose(backlog) == 2
        c.served("tasks.p2")
    assert c.choose(backlog) == 0
    c.served("tasks.p2")  # nothing of level 0 came: the next task of level 2 ran
    assert c.choose(backlog) == 0, "still owed"
    c.served("tasks")
    assert c.choose(backlog) == 2, "taken: the count starts again"


class Consumer:
    """What the chooser asks of a consumer: its partitions, positions, and pauses."""

    def __init__(self, positions: dict) -> None:
        self.positions = positions
        self.paused: set = set()

    def assignment(self):
        return set(self.positions)

    def position(self, tp) -> int:
        return self.positions[tp]

    def end_offsets(self, tps):
        raise AssertionError("fair share asks the ends beside the member's consumer")

    def pause(self, *tps) -> None:
        self.paused |= set(tps)

    def resume(self, *tps) -> None:
        self.paused -= set(tps)


def test_records_read_ahead_count_as_backlog_and_the_ends_come_from_beside_the_consumer():
    from kafka import TopicPartition

    low, high = TopicPartition("tasks", 0), TopicPartition("tasks.p2", 0)
    consumer = Consumer({low: 10, high: 4})
    asked: list = []

    def ends(tps):
        asked.append(set(tps))
        return {low: 10, high: 4}  # both read to their end: only what is held waits
    c = PriorityChooser(TOPICS, ends)
    assert c.apply(consumer, {"tasks.p2": 0, "tasks": 3}) == 0 and consumer.paused == {high}
    c.invalidate()
    assert c.apply(consumer, {"tasks.p2": 2, "tasks": 3}) == 2 and consumer.paused == {low}
    assert asked == [{low, high}, {low, high}]
    c.invalidate()
    assert c.apply(consumer, {}) is None and consumer.paused == set(), "nothing waits: every partition resumed"

