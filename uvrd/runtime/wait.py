"""The one place a consuming daemon waits: every wait ticks systemd and keeps the group membership.

A daemon waits for many things (the broker, the model, a separation, a commit, a full disk to
clear), and while it waits three things must go on each turn: act on signals and tell systemd
(STATUS=, WATCHDOG=), keep the consumer group's membership (a paused poll, so heartbeats and
rebalances proceed), and notice a stop.  :meth:`Runtime.wait` does them, and says why it stopped
waiting; nothing else in uvrd loops on its own.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from uvrd.runtime.deadline import Deadline
from uvrd.runtime.lifecycle import Lifecycle, Phase

T = TypeVar("T")

KEEPALIVE_POLL_MS = 100  # a turn's membership poll: heartbeats and rebalances, no records


class Why(enum.Enum):
    DONE = "done"          # until() answered
    BUDGET = "budget"      # the budget ran out first
    STOPPED = "stopped"    # a stop ended a wait that does not go on through a drain
    ABANDON = "abandon"    # the drain is over (or a second signal): nothing may be waited for now


@dataclass(frozen=True)
class Woke(Generic[T]):
    why: Why
    value: T | None = None  # what until() answered, when why is DONE

    @property
    def done(self) -> bool:
        return self.why is Why.DONE


class Member(Protocol):
    """What a wait needs of the group member (kafka/group_member.GroupMember): a paused poll."""

    def keep(self, timeout_ms: int) -> None: ...


class Runtime:
    """Signals, systemd and the group membership, kept while the daemon waits.

    *status* and *healthy* are asked each turn (healthy only when a watchdog ping is due).  The
    group member is attached once the daemon is connected; before that a turn sleeps.
    """

    def __init__(self, lifecycle: Lifecycle, status: Callable[[], str], healthy: Callable[[], bool],
                 sleep: Callable[[float], None] = time.sleep, on_turn: Callable[[], None] = lambda: None):
        """*on_turn*: the daemon's own once-a-turn step (the processor's heartbeat); it must not block."""
        self.lifecycle = lifecycle
        self._status = status
        self._healthy = healthy
        self._sleep = sleep
        self._on_turn = on_turn
        self.member: Member | None = None  # a GroupMember, once connected

    def tick(self) -> None:
        self.lifecycle.tick(self._status(), self._healthy)
        self._on_turn()

    def wait(self, until: Callable[[], T | None] | None = None, budget: Deadline | None = None, *,
             through_drain: bool, turn_ms: int = KEEPALIVE_POLL_MS) -> Woke[T]:
        """Wait until *until()* answers something truthy, *budget* ends, or a stop ends the wait.

        *through_drain*: whether the wait goes on while the daemon drains (work in flight, a commit)
        or ends at the first stop signal (a backoff, idle waiting).  Each turn: tick, check the stop,
        ask *until* (which may itself block briefly), check the budget, then keep the membership for
        up to *turn_ms* (0: not at all; *until* polls itself).
        """
        budget = budget or Deadline.never()
        while (ended := self.turn(through_drain=through_drain)) is None:
            if until is not None and (value := until()):
                return Woke(Why.DONE, value)
            if budget.expired():
                return Woke(Why.BUDGET)
            if turn_ms:
                self._turn(budget.cap(turn_ms / 1000))
        return Woke(ended)

    def turn(self, *, through_drain: bool) -> Why | None:
        """The start of one turn of a daemon's own loop (and of every wait): tick; None to go on, or
        why the loop must end now: ABANDON, or STOPPED for a loop that does not go on through a drain."""
        self.tick()
        phase = self.lifecycle.phase
        if phase is Phase.ABANDONING:
            return Why.ABANDON
        if phase is Phase.DRAINING and not through_drain:
            return Why.STOPPED
        return None

    def keep_membership(self, ms: int) -> None:
        """The end of one turn of a loop that does not poll for records itself: up to *ms* of a paused
        poll, so heartbeats and rebalances go on (a sleep before the daemon is connected)."""
        self._turn(ms / 1000)

    def pause(self, seconds: float, *, through_drain: bool) -> bool:
        """Wait *seconds*; False if a stop ended the wait first."""
        return self.wait(budget=Deadline.after(seconds), through_drain=through_drain).why is Why.BUDGET

    def _turn(self, seconds: float) -> None:
        if self.member is not None:
            self.member.keep(int(seconds * 1000))
        else:
            self._sleep(seconds)
