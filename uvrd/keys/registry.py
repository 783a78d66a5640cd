"""Adding and revoking keys: one record each on the compacted keys topic.

Two operators adding the same name at once, on two apis, must not both get a token (the later
record would silently replace the earlier key).  So, as a dead letter's replay does
(uvrd/boards/replays.py), each write goes through a transactional producer whose id is made from
the key's name: ``init_transactions`` fences any other write of that name still under way, then
the topic, read to its end under read_committed, says what the name holds now, and only then is
the record committed.
"""

from __future__ import annotations

from dataclasses import dataclass

import kafka.errors as Errors
import structlog

from uvrd import messages
from uvrd.config import KafkaConfig
from uvrd.kafka import clients, key_history
from uvrd.kafka.commit_mode import PRODUCER_BOUNDS, ExactlyOnce, Fenced, OutRecord
from uvrd.keys import record as keys
from uvrd.keys.record import KeyRecord, Quota, Scope

log = structlog.get_logger("uvrd.keys")

READ_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class KeyAdded:
    key: KeyRecord
    token: str  # shown once: only its hash is kept


@dataclass(frozen=True)
class KeyExists:
    """The name is taken (by a live key or a revoked one: a revoked name is never given out again)."""

    key: KeyRecord


@dataclass(frozen=True)
class KeyRevoked:
    key: KeyRecord
    already: bool  # it was revoked before this request


@dataclass(frozen=True)
class NoSuchKey:
    name: str


@dataclass(frozen=True)
class KeysUnconfirmed:
    """The broker did not confirm the write, or another write of the same name fenced it: asking
    again is safe (an add that landed answers KeyExists then)."""

    reason: str


@dataclass(frozen=True)
class QuotaSet:
    key: KeyRecord


@dataclass(frozen=True)
class KeyIsRevoked:
    """A revoked key's quota is not changed: it submits nothing any more."""

    key: KeyRecord


AddOutcome = KeyAdded | KeyExists | KeysUnconfirmed
RevokeOutcome = KeyRevoked | NoSuchKey | KeysUnconfirmed
QuotaOutcome = QuotaSet | KeyIsRevoked | NoSuchKey | KeysUnconfirmed


def add(kafka_config: KafkaConfig, topic: str, name: str, scope: Scope, quota: Quota = keys.NO_QUOTA) -> AddOutcome:
    """A new key *name* (already checked by record.check_name/check_scope/check_quota)."""
    def plan(current: KeyRecord | None) -> tuple[OutRecord, KeyAdded] | KeyExists:
        if current is not None:
            return KeyExists(current)
        key, token = keys.new_key(name, scope, messages.now_iso(), quota)
        return OutRecord(topic, name.encode(), key.encode()), KeyAdded(key, token)

    outcome = _write(kafka_config, topic, name, plan)
    if isinstance(outcome, KeyAdded):
        log.info("key added", name=name, scope=scope)
    return outcome


def revoke(kafka_config: KafkaConfig, topic: str, name: str) -> RevokeOutcome:
    def plan(current: KeyRecord | None) -> tuple[OutRecord, KeyRevoked] | KeyRevoked | NoSuchKey:
        if current is None:
            return NoSuchKey(name)
        if current.revoked:
            return KeyRevoked(current, already=True)
        revoked = current.revoke(messages.now_iso())
        return OutRecord(topic, name.encode(), revoked.encode()), KeyRevoked(revoked, already=False)

    outcome = _write(kafka_config, topic, name, plan)
    if isinstance(outcome, KeyRevoked) and not outcome.already:
        log.info("key revoked", name=name)
    return outcome


def set_quota(kafka_config: KafkaConfig, topic: str, name: str, change: dict) -> QuotaOutcome:
    """Change key *name*'s quota: each member of *change* (already checked by record.check_quota)
    replaces that limit, null removes it, an absent one stays.  Fenced per name like add and revoke,
    and applied to the record the topic holds now, so two changes of one key never lose one."""
    def plan(current: KeyRecord | None) -> tuple[OutRecord, QuotaSet] | KeyIsRevoked | NoSuchKey:
        if current is None:
            return NoSuchKey(name)
        if current.revoked:
            return KeyIsRevoked(current)
        changed = current.with_quota(keys.check_quota(change, current.quota))
        return OutRecord(topic, name.encode(), changed.encode()), QuotaSet(changed)

    outcome = _write(kafka_config, topic, name, plan)
    if isinstance(outcome, QuotaSet):
        log.info("key quota set", name=name, **outcome.key.quota.as_dict())
    return outcome


def _write(kafka_config: KafkaConfig, topic: str, name: str, plan):
    mode = ExactlyOnce(lambda: clients.producer(kafka_config, f"{kafka_config.client_id}-key-{name}",
                                                **PRODUCER_BOUNDS), None)  # type: ignore[arg-type]
    try:
        mode.open()
        planned = plan(_current(kafka_config, topic, name))
        if not isinstance(planned, tuple):
            return planned
        out, outcome = planned
        mode.commit([out], {})
        return outcome
    except Fenced as e:
        return KeysUnconfirmed(f"another change of key {name!r} is under way ({e})")
    except Errors.KafkaError as e:
        return KeysUnconfirmed(f"the broker did not confirm the change of key {name!r}: {e or type(e).__name__}")
    finally:
        mode.close(timeout=1.0)


def _current(kafka_config: KafkaConfig, topic: str, name: str) -> KeyRecord | None:
    """What *name* holds now: the keys topic read to its end (read_committed)."""
    found = None
    for value in key_history.values_of(kafka_config, topic, name, READ_TIMEOUT_S):
        if value is None:
            found = None  # a tombstone an operator wrote by hand
        elif (parsed := keys.parse(value)) is not None and not (found is not None and found.revoked):
            found = parsed  # a revocation is final (board.py), whatever follows it
    return found
