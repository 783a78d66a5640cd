"""Close a consumer, leaving its group at once even while a join is held.

A broker answers the requests of one connection in order, and holds a JoinGroup until the
rebalance it belongs to completes: Tansu for a round of 3 s, Apache Kafka until every member
has rejoined (at most max.poll.interval.ms) or, for a new group, group.initial.rebalance.delay.ms.
kafka-python 3.0 sends its LeaveGroup on the coordinator connection, behind that JoinGroup, and
waits for the answer, so a consumer closed while joining waited for the round to end or for its
close timeout: measured, 2.8 s of a 3 s round for a first join on Tansu, and the whole 5 s for a
member whose rejoin waited for others.

Brokers differ in what removes such a member:
- Apache Kafka and Redpanda remove it on a LeaveGroup that arrives on another connection, and
  answer its held JoinGroup at once (UNKNOWN_MEMBER_ID: Kafka's removeMemberAndUpdateGroup,
  Redpanda's remove_member); one queued behind the JoinGroup is read only once that is
  answered, and is lost if the client has closed the connection by then;
- Tansu (measured) answers a LeaveGroup on another connection but keeps the member in the round;
  the one behind the JoinGroup removes it, even once the client has closed the connection.

So while a join is held, :func:`close` sends the LeaveGroup on both: on the coordinator
connection, behind the join, and on the consumer's ordinary connection to the same broker, which
no JoinGroup holds; it waits for the second one's answer only.  The consumer then forgets its
membership, and kafka-python's close() has no group left to leave.  With no join held,
kafka-python's own LeaveGroup is answered at once, as it always was.
"""

from __future__ import annotations

from typing import Any

import kafka.errors as Errors
import structlog
from kafka import KafkaConsumer
from kafka.coordinator.consumer import ConsumerCoordinator
from kafka.protocol.consumer import LeaveGroupRequest
from kafka.structs import MemberState

from uvrd.runtime.deadline import Deadline

log = structlog.get_logger("uvrd.group")

REASON = "the consumer is closing"


def close(consumer: KafkaConsumer, deadline: Deadline) -> None:
    """Close *consumer* (no auto-commit), leaving its group, within *deadline*."""
    coordinator = getattr(consumer, "_coordinator", None)
    try:
        if coordinator is not None and join_held(coordinator):
            _leave_beside_the_join(coordinator, deadline)
    except (AttributeError, TypeError) as e:
        # These are kafka-python 3.0's internals: if a release changes them, its own close() leaves
        # (behind a held join, slowly), rather than the stop failing.
        log.warning("cannot leave beside a held join with this kafka-python", error=repr(e))
    consumer.close(autocommit=False, timeout_ms=int(deadline.remaining() * 1000))


def join_held(coordinator: ConsumerCoordinator) -> bool:
    """Whether the member has an id the broker knows and a JoinGroup the broker may be holding."""
    return (coordinator.state is MemberState.REBALANCING and coordinator.is_dynamic_member()
            and coordinator._generation.has_member_id() and not coordinator.coordinator_unknown())


def _leave_beside_the_join(coordinator: ConsumerCoordinator, deadline: Deadline) -> None:
    broker = _broker_of(coordinator)
    if broker is None:
        log.warning("no connection beside the held join; leaving the group behind it", group_id=coordinator.group_id)
        return

    async def leave() -> Any:
        coordinator._manager.send(_leave_request(coordinator), node_id=coordinator.coordinator_id)
        beside = coordinator._manager.send(_leave_request(coordinator), node_id=broker)
        return await coordinator._manager.wait_for(beside, int(deadline.remaining() * 1000))

    try:
        response = coordinator._net.run(leave)
    except Errors.KafkaError as e:
        # kafka-python's own close() tries again on the coordinator connection, in what is left of the deadline.
        log.warning("could not leave the group beside the held join", group_id=coordinator.group_id,
                    error=str(e) or type(e).__name__)
        return
    coordinator._handle_leave_group_response(response)
    coordinator.reset_generation()
    log.info("left the group while its join was held", group_id=coordinator.group_id)


def _leave_request(coordinator: ConsumerCoordinator) -> LeaveGroupRequest:
    member = coordinator._generation.member_id
    return LeaveGroupRequest(
        group_id=coordinator.group_id, member_id=member,
        members=[LeaveGroupRequest.MemberIdentity(member_id=member, group_instance_id=coordinator.group_instance_id,
                                                  reason=REASON)])


def _broker_of(coordinator: ConsumerCoordinator) -> int | None:
    """The node id of the coordinator's broker in the cluster metadata (kafka-python gives the
    coordinator a node id of its own, for a connection of its own)."""
    cluster = coordinator._cluster
    node = cluster.broker_metadata(coordinator.coordinator_id)
    if node is None:
        return None
    return next((b.node_id for b in cluster.brokers() if (b.host, b.port) == (node.host, node.port)), None)
