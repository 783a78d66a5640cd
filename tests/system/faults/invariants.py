"""The promise, checked from outside: every accepted task ends in exactly one outcome.

An outcome is a successful webhook delivery (of a success or of a failure) or
a dead-letter record from the uploader (the webhook could not be delivered).
Everything is read where a user or an operator would look: the webhook
receiver, the broker's topics, the disk.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field

from support import KafkaView


@dataclass
class Outcomes:
    on_task_topic: set[str] = field(default_factory=set)
    results: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    # task_uuid -> the statuses of its successful webhook deliveries, in arrival order
    deliveries: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def final(self, task_uuid: str) -> bool:
        return bool(self.deliveries.get(task_uuid)) or self.dead_letters.get(task_uuid, 0) > 0


def read_outcomes(pipeline, kafka: KafkaView, with_topics: bool = True) -> Outcomes:
    o = Outcomes()
    for request in pipeline.receiver.successes():
        payload = json.loads(request["body"])
        o.deliveries[payload["task_uuid"]].append(payload["status"])
    for record in kafka.read_all(pipeline.topics.dead_letter):
        headers = dict(record.headers)
        if headers.get("uvrd-stage") == b"uploader":
            o.dead_letters[json.loads(record.value)["task_uuid"]] += 1
    if with_topics:
        for result in kafka.results(pipeline.topics.results):
            o.results[result.get("task_uuid")] += 1
        for record in kafka.read_all(pipeline.topics.tasks, partitions=pipeline.partitions):
            o.on_task_topic.add(json.loads(record.value)["task_uuid"])
    return o


@dataclass
class Summary:
    tasks: int
    delivered: int
    failed: int
    lost: int
    duplicated: int
    stuck: int
    redelivered: int
    refused: int
    faults: dict[str, int]
    seed: int
    problems: list[str]

    def line(self) -> str:
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.faults.items()))
        return (f"tasks={self.tasks} delivered={self.delivered} failed={self.failed} lost={self.lost} "
                f"duplicated={self.duplicated} stuck={self.stuck} redelivered={self.redelivered} "
                f"refused={self.refused} {counts} seed={self.seed}")


def summarize(accepted: list[str], refused: int, o: Outcomes, faults: dict[str, int], seed: int) -> Summary:
    problems = []
    delivered = failed = lost = duplicated = stuck = redelivered = 0
    for task_uuid in accepted:
        statuses = o.deliveries.get(task_uuid, [])
        dead = o.dead_letters.get(task_uuid, 0)
        if task_uuid not in o.on_task_topic:
            lost += 1
            problems.append(f"{task_uuid}: accepted (202) but never produced to the task topic")
            continue
        if not statuses and not dead:
            stuck += 1
            problems.append(f"{task_uuid}: no delivery and no dead-letter record")
            continue
        # Two results, two different deliveries, or a delivery and a dead letter: two outcomes.
        if o.results.get(task_uuid, 0) > 1 or len(set(statuses)) > 1 or (statuses and dead) or dead > 1:
            duplicated += 1
            problems.append(f"{task_uuid}: results={o.results.get(task_uuid, 0)} deliveries={statuses} "
                            f"dead_letters={dead}")
            continue
        # The same delivery again (an uploader killed between the 2xx and its commit): receivers
        # deduplicate it by its Idempotency-Key, so it is counted, not a broken promise.
        redelivered += len(statuses) > 1
        if statuses and statuses[0] == "success":
            delivered += 1
        else:
            failed += 1
    return Summary(len(accepted), delivered, failed, lost, duplicated, stuck, redelivered, refused,
                   dict(faults), seed, problems)
