"""What of one partition may be committed now, while its records finish in any order.

A committed offset says "everything below it is done", so with several records
of a partition worked on at once it may move only up to the lowest one still
unfinished.  The ledger keeps the records taken from one partition, in the
order taken, each unfinished or finished with its outcome (whatever must be
committed with its offset).  :meth:`OffsetLedger.ready` hands out the finished
run at the front, and :meth:`OffsetLedger.committed` forgets it once it is in.

Offsets need not be consecutive (transaction markers take offsets too): the
order of taking is what counts, and the offset to commit is one past the last
finished record of the run.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

from uvrd.kafka.group_member import Claim

T = TypeVar("T")


class _Unfinished(enum.Enum):
    """A record taken, not yet finished: an enum member, so that the type checker tells it from an outcome."""

    UNFINISHED = enum.auto()


_UNFINISHED: Final = _Unfinished.UNFINISHED


@dataclass(frozen=True)
class Ready(Generic[T]):
    outcomes: tuple[T, ...]  # in offset order
    next_offset: int  # what to commit: one past the last finished record of the run


class OffsetLedger(Generic[T]):
    def __init__(self, claim: Claim) -> None:
        # The group member's claim on the partition: nothing of it is committed unless the claim is held.
        self.claim = claim
        self.tp = claim.tp
        self._entries: dict[int, T | _Unfinished] = {}  # offset -> outcome, in the order taken
        self._last_taken: int | None = None

    def take(self, offset: int) -> None:
        if self._last_taken is not None and offset <= self._last_taken:
            raise ValueError(f"offset {offset} of {self.tp} was already taken (last taken: {self._last_taken})")
        self._entries[offset] = _UNFINISHED
        self._last_taken = offset

    def taken(self, offset: int) -> bool:
        """Whether *offset* was taken already (committed since, or still here)."""
        return self._last_taken is not None and offset <= self._last_taken

    def finish(self, offset: int, outcome: T) -> None:
        if self._entries.get(offset, None) is not _UNFINISHED:
            raise ValueError(f"offset {offset} of {self.tp} is not in flight")
        self._entries[offset] = outcome

    def ready(self) -> Ready[T] | None:
        """The finished run at the front, or None if the lowest record is unfinished (or none is left)."""
        outcomes: list[T] = []
        last = None
        for offset, outcome in self._entries.items():
            if outcome is _UNFINISHED:
                break
            outcomes.append(outcome)
            last = offset
        return None if last is None else Ready(tuple(outcomes), last + 1)

    def committed(self, next_offset: int) -> None:
        """Forget the records below *next_offset*: they are committed."""
        for offset in [o for o in self._entries if o < next_offset]:
            del self._entries[offset]

    @property
    def next_to_take(self) -> int | None:
        """Where the partition's consumer position belongs: past everything taken (None: nothing taken)."""
        return None if self._last_taken is None else self._last_taken + 1

    def unfinished(self) -> list[int]:
        return [o for o, outcome in self._entries.items() if outcome is _UNFINISHED]

    def __len__(self) -> int:
        """Records taken and not yet committed."""
        return len(self._entries)
