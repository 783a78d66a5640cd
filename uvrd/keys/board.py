"""Every key, from the compacted keys topic (keyed by name), read whole by each api worker.

A revocation is a record like any other: the reader folds it in about as soon as it is written
(it polls every half second), and from then on the key is refused.  A token is hashed once per
worker: a verified token is remembered by its SHA-256 together with the digest it matched, so
the next request costs one dictionary look-up, and a revoked (or replaced) key's token stops
matching the moment its record changes.
"""

from __future__ import annotations

import hashlib

from kafka.consumer.fetcher import ConsumerRecord

from uvrd.config import KafkaConfig
from uvrd.kafka.topic_view import TopicBoard
from uvrd.keys import record as keys
from uvrd.keys.record import KeyRecord

# Tokens remembered per worker; past it the memory starts again (a few hashes then, nothing more).
REMEMBERED = 10_000


class KeyBoard(TopicBoard):
    """The keys by name.  A deployment that has not created the topic yet has no keys: the
    configured api.tokens still work, and adding a key answers 503 until the topic exists."""

    def __init__(self, kafka_config: KafkaConfig, topic: str):
        super().__init__(kafka_config, topic)
        self._keys: dict[str, KeyRecord] = {}
        self._verified: dict[bytes, tuple[str, str]] = {}

    def get(self, name: str) -> KeyRecord | None:
        with self._lock:
            return self._keys.get(name)

    def all(self) -> list[KeyRecord]:
        with self._lock:
            return sorted(self._keys.values(), key=lambda k: k.name)

    def note(self, key: KeyRecord) -> None:
        """A record this worker wrote itself, before the reader sees it come back."""
        with self._lock:
            self._put(key)

    def verify(self, token: str) -> KeyRecord | None:
        """The live key *token* belongs to, or None."""
        split = keys.split_token(token)
        if split is None:
            return None
        name, secret = split
        fingerprint = hashlib.sha256(token.encode()).digest()
        with self._lock:
            key = self._keys.get(name)
            remembered = self._verified.get(fingerprint)
        if key is None or key.revoked:
            return None
        if remembered == (key.name, key.digest):
            return key
        if not key.matches(secret):  # outside the lock: ~50 ms of scrypt
            return None
        with self._lock:
            if len(self._verified) >= REMEMBERED:
                self._verified.clear()
            self._verified[fingerprint] = (key.name, key.digest)
        return key

    def fold(self, rec: ConsumerRecord) -> None:
        try:
            name = rec.key.decode()
        except (AttributeError, UnicodeDecodeError):
            return
        with self._lock:
            if rec.value is None:  # a tombstone an operator wrote by hand: the key is gone
                self._keys.pop(name, None)
                return
            key = keys.parse(rec.value)
            if key is not None and key.name == name:
                self._put(key)

    def _put(self, key: KeyRecord) -> None:
        """Under the lock.  A revocation is final: a later live record of the same name (which uvrd
        never writes, registry.py fences that) does not bring the key back."""
        current = self._keys.get(key.name)
        if current is not None and current.revoked and not key.revoked:
            return
        self._keys[key.name] = key
