"""A commit whose end went unanswered is retried as it was; whether it landed is read from the group's
offsets, or, for a commit whose offset does not move (fair share), from what the caller says."""

from __future__ import annotations

import pytest
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from uvrd.kafka.commit_mode import ExactlyOnce, OutRecord, Unanswered

TP = TopicPartition("tasks", 0)
OFFSETS = {TP: OffsetAndMetadata(3, "", -1)}  # where the partition's offset already was


class Result:
    def __init__(self, answered: bool) -> None:
        self.answered = answered

    def wait(self, timeout_ms: float) -> bool:
        return self.answered


class Producer:
    """The calls ExactlyOnce makes of a transactional KafkaProducer; *answer_commit*: whether the
    broker answers the transaction's end."""

    def __init__(self, answer_commit: bool, sent: list) -> None:
        self.sent = sent
        self._answer = answer_commit
        self._transaction_manager = self
        self._sender = self

    def init_transactions(self) -> None: ...
    def wakeup(self) -> None: ...
    def begin_transaction(self) -> None: ...
    def close(self, timeout: float) -> None: ...

    def send(self, topic, key=None, value=None, headers=None) -> None:
        self.sent.append(value)

    def send_offsets_to_transaction(self, offsets, group_metadata) -> Result:
        return Result(True)

    def begin_commit(self) -> Result:
        return Result(self._answer)


class Consumer:
    def group_metadata(self) -> object:
        return object()

    def committed(self, tp, timeout_ms=None) -> int:
        return 3  # the offset did not move: it cannot tell whether the commit landed


@pytest.mark.parametrize("landed", [True, False])
def test_an_unsure_commit_that_moves_no_offset_is_judged_by_the_caller(landed):
    sent: list = []
    answers = iter([False, True])  # the first end unanswered, the retry's answered
    mode = ExactlyOnce(lambda: Producer(next(answers), sent), Consumer())
    mode.open()
    records = [OutRecord("results", b"k", b"result")]
    with pytest.raises(Unanswered):
        mode.commit(records, OFFSETS, lambda: landed)
    mode.commit(records, OFFSETS, lambda: landed)
    assert sent == [b"result"] if landed else [b"result", b"result"], \
        "landed: not produced again; not landed: produced again, once"
