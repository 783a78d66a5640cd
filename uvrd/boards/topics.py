"""The topics uvrd uses, created if missing (an admin step; the daemons never create topics)."""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from uvrd.config import TopicsConfig


def plan(topics: TopicsConfig, task_partitions: int = 1) -> list[NewTopic]:
    """One topic per task priority (partitions bound how many processors share the work),
    results, dead letters, the compacted status, cancellation, worker, replay, key and idempotency
    topics, and the events."""
    new = [NewTopic(t, task_partitions, 1) for t in topics.task_topics()]
    new += [NewTopic(topics.results, 1, 1), NewTopic(topics.dead_letter, 1, 1),
            NewTopic(topics.status, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(topics.cancellations, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(topics.workers, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(topics.replays, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(topics.keys, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(topics.idempotency, 1, 1, topic_configs={"cleanup.policy": "compact"}),
            NewTopic(topics.events, 1, 1, topic_configs={"retention.ms": str(24 * 3600 * 1000)})]
    return new


def ensure(admin_settings: dict, topics: TopicsConfig, task_partitions: int = 1) -> list[str]:
    """Create whichever of uvrd's topics are missing; return the names created."""
    admin = KafkaAdminClient(request_timeout_ms=10000, **admin_settings)
    created = []
    try:
        for topic in plan(topics, task_partitions):
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created
