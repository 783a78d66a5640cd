"""Kafka clients built from the [kafka] section, with the settings uvrd relies on.

Auto-commit is never on: offsets move only with a committed result.
"""

from __future__ import annotations

from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from uvrd.config import KafkaConfig
from uvrd.kafka import group_join

group_join.install()


def client_settings(kc: KafkaConfig) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in kc.bootstrap_servers.split(",") if s.strip()],
        "client_id": kc.client_id,
        "security_protocol": kc.security_protocol,
    }
    optional = {
        "sasl_mechanism": kc.sasl_mechanism, "sasl_plain_username": kc.sasl_plain_username,
        "sasl_plain_password": kc.sasl_plain_password, "ssl_cafile": kc.ssl_cafile,
        "ssl_certfile": kc.ssl_certfile, "ssl_keyfile": kc.ssl_keyfile, "ssl_password": kc.ssl_password,
    }
    settings.update({k: v for k, v in optional.items() if v})
    if kc.security_protocol in ("SSL", "SASL_SSL"):
        settings["ssl_check_hostname"] = kc.ssl_check_hostname
    return settings


def consumer(kc: KafkaConfig, group_id: str | None, **overrides: Any) -> KafkaConsumer:
    settings = {
        **client_settings(kc),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "session_timeout_ms": kc.session_timeout_ms,
        "heartbeat_interval_ms": kc.heartbeat_interval_ms,
        "max_poll_interval_ms": kc.max_poll_interval_ms,
        # One task at a time: nothing fetched sits in memory while a job runs.
        "max_poll_records": 1,
        **overrides,
    }
    return KafkaConsumer(**settings)


def producer(kc: KafkaConfig, transactional_id: str | None = None, **overrides: Any) -> KafkaProducer:
    settings = {
        **client_settings(kc),
        "acks": "all",
        "enable_idempotence": True,
        "request_timeout_ms": kc.request_timeout_ms,
        **overrides,
    }
    if transactional_id:
        settings["transactional_id"] = transactional_id
    return KafkaProducer(**settings)
