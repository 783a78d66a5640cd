"""A dead letter sent again, exactly once: a failed task back to its queue, or an undelivered
result back to the uploader.

Exactly once, between any number of api instances and operators asking at the same moment:
- the replay's transactional producer has an id made from the letter's coordinates, so
  ``init_transactions`` fences any other replay of the same letter still under way (its commit
  fails) and finishes or aborts one a crashed api left;
- then the compacted replay topic, read to its end under read_committed, says whether the letter
  was replayed already (its key is the letter's ``topic/partition/offset``);
- if not, one transaction holds the re-queued record, the task's new status and the replay's own
  record.  A second replay finds that record and is refused (:class:`AlreadyReplayed`).

The re-queued record carries ``"replay": n`` (one more than the letter's), which travels through
the processor's result and status records to the uploader, where ``task_uuid/replay-n`` is the
delivery's identity and Idempotency-Key (messages.delivery_id): the replay's webhook is its own,
not a duplicate of the failure's.
"""

from __future__ import annotations

import json
import kafka.errors as Errors
import structlog

from uvrd import messages
from uvrd.config import KafkaConfig, TopicsConfig
from uvrd.kafka import clients, key_history
from uvrd.boards import dead_letters, status
from uvrd.kafka.commit_mode import PRODUCER_BOUNDS, ExactlyOnce, Fenced, OutRecord
from uvrd.outcomes import AlreadyReplayed, NotReplayable, Replayed, ReplayOutcome, ReplayUnconfirmed

log = structlog.get_logger("uvrd.replays")

READ_TIMEOUT_S = 10.0




def letter_key(topic: str, partition: int, offset: int) -> str:
    return f"{topic}/{partition}/{offset}"


def replay(kafka_config: KafkaConfig, topics: TopicsConfig, partition: int, offset: int) -> ReplayOutcome | None:
    """Replay the dead letter at *partition*/*offset*; None if there is no letter there."""
    rec = dead_letters.read_record(kafka_config, topics.dead_letter, partition, offset)
    if rec is None:
        return None
    key = letter_key(topics.dead_letter, partition, offset)
    planned = _plan(topics, rec, key)
    if isinstance(planned, NotReplayable):
        return planned
    mode = ExactlyOnce(lambda: clients.producer(kafka_config, _transactional_id(kafka_config, key),
                                                **PRODUCER_BOUNDS), None)
    try:
        mode.open()
        if (done := _done(kafka_config, topics.replays, key)) is not None:
            return AlreadyReplayed(done.get("replayed_at", ""), done.get("replay", 0))
        records, outcome = planned
        mode.commit(records, {})
    except Fenced as e:
        return ReplayUnconfirmed(f"another replay of this letter is under way ({e})")
    except Errors.KafkaError as e:
        return ReplayUnconfirmed(f"the broker did not confirm the replay: {e or type(e).__name__}")
    finally:
        mode.close(timeout=1.0)
    log.info("dead letter replayed", letter=key, task_uuid=outcome.task_uuid, replay=outcome.replay,
             to=outcome.topic, stage=outcome.stage)
    return outcome


def _plan(topics: TopicsConfig, rec, key: str) -> tuple[list[OutRecord], Replayed] | NotReplayable:
    """The records one replay of *rec* commits, or why it cannot be replayed."""
    letter = dead_letters.describe(rec)
    stage, source = letter["stage"], letter["source"] or ""
    try:
        message = json.loads(rec.value)
    except (TypeError, ValueError):
        message = None
    if not isinstance(message, dict):
        return NotReplayable("the letter's record is not a JSON object: sent again, it would be refused again")
    n = messages.replay_of(message) + 1
    now = messages.now_iso()
    if stage == "processor":
        topic = source.rsplit("/", 2)[0]
        if topic not in topics.task_topics():
            return NotReplayable(f"the letter came from {topic!r}, not one of this deployment's task topics")
        try:
            task = messages.parse_task(rec.value, rec.key)
        except messages.BadMessage as e:
            return NotReplayable(f"the letter's task would be refused again: {e}")
        if n > messages.MAX_REPLAYS:
            return NotReplayable(f"the task was replayed {n - 1} times already")
        task_uuid = task.task_uuid  # the message's own, validated
        requeued = OutRecord(topic, rec.key, messages.encode({**message, "replay": n}))
        state = status.record(topics.status, task_uuid, "queued", replay=n, replayed_at=now)
    elif stage == "uploader":
        given = message.get("task_uuid")
        if not isinstance(given, str) or not messages.TASK_UUID_RE.fullmatch(given):
            return NotReplayable("the letter's result has no valid task_uuid")
        task_uuid = given
        if not message.get("hook_url"):
            return NotReplayable("the letter's result has no hook_url: there is nobody to deliver it to")
        topic = topics.results
        requeued = OutRecord(topic, rec.key, messages.encode({**message, "replay": n}))
        state = status.record(topics.status, task_uuid, _result_state(message),
                              replay=n, replayed_at=now, stems=message.get("stems") or None,
                              error_message=message.get("error_message"))
    else:
        return NotReplayable(f"the letter names no stage uvrd replays ({stage!r})")
    marker = OutRecord(topics.replays, key.encode(), messages.encode(
        {"replayed_at": now, "replay": n, "task_uuid": task_uuid, "to": topic}))
    return [requeued, state, marker], Replayed(task_uuid, n, topic, stage)


def _result_state(result: dict) -> str:
    """The task's state a result tells (as webhook.body says it), for a re-delivered result's status."""
    return "succeeded" if result.get("success") is True else "cancelled" if result.get("cancelled") else "failed"


def _transactional_id(kafka_config: KafkaConfig, key: str) -> str:
    return f"{kafka_config.client_id}-replay-{key}"


def _done(kafka_config: KafkaConfig, topic: str, key: str) -> dict | None:
    """The replay record of *key*, if the compacted replay topic (read to its end) holds one."""
    found = None
    for value in key_history.values_of(kafka_config, topic, key, READ_TIMEOUT_S):
        found = json.loads(value) if value else None
    return found
