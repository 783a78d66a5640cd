"""The [kafka] settings on real clients of the session broker: what they carry, and what their DEBUG
logging shows (the pure checks of client_settings are in tests/unit/kafka/test_client_settings.py)."""

from __future__ import annotations

import io

import pytest
from kafka import KafkaAdminClient

from uvrd.boards import topics
from uvrd.config import KafkaConfig, TopicsConfig
from uvrd.kafka import clients
from support import logging_restored
from uvrd.runtime import logs

SECURITY_KEYS = {"security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                 "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_check_hostname"}


@pytest.fixture
def restore_logging():
    """configure() rewires the root logger; later tests in this worker must not log into a closed stream."""
    with logging_restored():
        yield


def test_real_clients_carry_the_settings(broker):
    """The same settings on clients that connect (PLAINTEXT, so the test broker takes them)."""
    kc = KafkaConfig(bootstrap_servers=broker.bootstrap, sasl_mechanism="PLAIN", sasl_plain_username="uvrd",
                     sasl_plain_password="sasl-pw", ssl_cafile="/etc/uvrd/ca.pem", ssl_password="key-pw")
    expected = clients.client_settings(kc)
    assert SECURITY_KEYS - {"ssl_check_hostname", "ssl_certfile", "ssl_keyfile"} <= set(expected)
    consumer = clients.consumer(kc, group_id=None)
    producer = clients.producer(kc)
    admin = KafkaAdminClient(**expected)  # what `uvrd dev` hands topics.ensure
    try:
        for client in (consumer, producer, admin):
            assert {k: client.config[k] for k in expected if k != "bootstrap_servers"} == {
                k: v for k, v in expected.items() if k != "bootstrap_servers"}, type(client).__name__
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
        admin.close()


def test_debug_logging_never_shows_the_kafka_passwords(broker, restore_logging):
    """kafka-python's admin client logs its configuration at DEBUG; uvrd dev builds one with the SASL settings."""
    out = io.StringIO()
    logs.configure("uvrd-test", level="DEBUG", stream=out)
    kc = KafkaConfig(bootstrap_servers=broker.bootstrap, sasl_mechanism="PLAIN", sasl_plain_username="uvrd",
                     sasl_plain_password="sasl-Pw-0", ssl_password="key-Pw-0")
    topics.ensure(clients.client_settings(kc), TopicsConfig(*[f"logs-debug.{n}" for n in ("t", "r", "d", "s")]))
    consumer = clients.consumer(kc, group_id=None)
    consumer.close(autocommit=False)
    text = out.getvalue()
    assert '"level": "debug"' in text and '"logger": "kafka.' in text, "kafka-python's DEBUG lines are shown"
    assert "sasl-Pw-0" not in text and "key-Pw-0" not in text
