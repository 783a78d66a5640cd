"""Close a consumer, leaving its group only where the leave cannot leave the group leaderless.

A member that stops sends LeaveGroup so that its partitions move at once rather than after its
session lapses.  But Tansu 0.6.0 (the one-host broker ``uvrd broker`` runs) removes a member that
leaves a round still forming without handing on the round's leadership: the departed member stays
the leader of every later round, every other member's SyncGroup is refused as a follower's
("rebalance in progress"), and the group never forms again, fresh members included, until the
broker restarts (measured: a newcomer waited 40 s and more with the session at 6 s; the fault suite
saw the uploader's groups stop so for good).  A member that lets its session lapse is evicted by
the sweep that does hand leadership on.

So a member leaves only where it cannot be the leader of a forming round:
- while it rejoins (its JoinGroup may be held, and the answer may make it the leader) it does not
  leave: the round waits out its session, as a member that crashed would have it wait;
- while it holds an assignment as a follower it leaves, as kafka-python's close() does: a round
  that forms meanwhile has another leader;
- while it holds one as the leader it leaves only if the broker describes the group as Stable; a
  round begun by a newcomer whose join it has not yet heard of is left to its session.

On any broker that costs at most one session timeout, and only to a stop in the middle of a round.
"""

from __future__ import annotations

import kafka.errors as Errors
import structlog
from kafka import KafkaConsumer
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.protocol.admin import DescribeGroupsRequest
from kafka.structs import MemberState

from uvrd.runtime.deadline import Deadline

log = structlog.get_logger("uvrd.group")

# What the broker's DescribeGroups says of a group whose members all have their assignment.
STABLE = "Stable"
MID_ROUND = "not leaving the group in the middle of a round: the round waits out this member's session"
LEADER_MID_ROUND = ("not leaving the group it leads while the group is not stable: the next round waits out "
                    "this member's session")


def close(consumer: KafkaConsumer, deadline: Deadline, commit: bool = False) -> None:
    """Close *consumer*, leaving its group if that is safe, within *deadline*; with *commit* (a
    consumer that auto-commits) its positions are committed first, while it is still a member."""
    coordinator = getattr(consumer, "_coordinator", None)
    if commit and consumer.assignment():
        try:
            consumer.commit(timeout_ms=int(deadline.remaining() * 1000))
        except Errors.KafkaError as e:  # what it read again after a restart is what auto-commit would lose too
            log.info("could not commit before closing", error=str(e) or type(e).__name__)
    try:
        if coordinator is not None and coordinator.group_id is not None and not leave_is_safe(coordinator, deadline):
            # kafka-python's close() leaves whatever member it has: it has none now.
            coordinator.reset_generation()
    except (AttributeError, TypeError) as e:
        # These are kafka-python 3.0's internals: if a release changes them, its own close() leaves.
        log.warning("cannot tell whether leaving the group is safe with this kafka-python", error=repr(e))
    consumer.close(autocommit=False, timeout_ms=int(deadline.remaining() * 1000))


def leave_is_safe(coordinator: ConsumerCoordinator, deadline: Deadline) -> bool:
    """Whether a LeaveGroup now cannot leave a forming round without its leader (module docstring)."""
    if not (coordinator.is_dynamic_member() and coordinator._generation.has_member_id()
            and coordinator.state is not MemberState.UNJOINED):
        return True  # nothing to leave: kafka-python's close() sends none
    if coordinator.state is not MemberState.STABLE:
        log.info(MID_ROUND, group_id=coordinator.group_id, session_timeout_ms=coordinator.config["session_timeout_ms"])
        return False
    if not coordinator._is_leader:
        return True
    state = group_state(coordinator, deadline)
    if state != STABLE:
        log.info(LEADER_MID_ROUND, group_id=coordinator.group_id, group_state=state,
                 session_timeout_ms=coordinator.config["session_timeout_ms"])
        return False
    return True


def group_state(coordinator: ConsumerCoordinator, deadline: Deadline) -> str | None:
    """The group's state as its coordinator describes it; None if it did not answer in time."""
    if coordinator.coordinator_unknown():
        return None

    async def describe() -> DescribeGroupsRequest:
        request = DescribeGroupsRequest(groups=[coordinator.group_id], include_authorized_operations=False)
        future = coordinator._manager.send(request, node_id=coordinator.coordinator_id)
        return await coordinator._manager.wait_for(future, int(deadline.remaining() * 1000))

    try:
        response = coordinator._net.run(describe)
    except Errors.KafkaError as e:
        log.info("could not describe the group before leaving it", group_id=coordinator.group_id,
                 error=str(e) or type(e).__name__)
        return None
    described = [g for g in response.groups if g.group_id == coordinator.group_id]
    if not described or described[0].error_code != 0:
        return None
    state: str = described[0].group_state
    return state
