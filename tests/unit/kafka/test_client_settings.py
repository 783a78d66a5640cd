"""The [kafka] security settings reach every Kafka client uvrd builds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from uvrd.config import KafkaConfig
from uvrd.kafka import clients

SASL_SSL = KafkaConfig(bootstrap_servers="kafka-1.example:9093, kafka-2.example:9093", client_id="uvrd-test",
                       security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                       sasl_plain_username="uvrd", sasl_plain_password="sasl-pw", ssl_cafile="/etc/uvrd/ca.pem",
                       ssl_certfile="/etc/uvrd/client.pem", ssl_keyfile="/etc/uvrd/client.key",
                       ssl_password="key-pw")
SECURITY_KEYS = {"security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password",
                 "ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_check_hostname"}
UVRD = Path(clients.__file__).parents[1]


def test_sasl_ssl_settings_pass_through_unchanged():
    assert clients.client_settings(SASL_SSL) == {
        "bootstrap_servers": ["kafka-1.example:9093", "kafka-2.example:9093"], "client_id": "uvrd-test",
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "uvrd",
        "sasl_plain_password": "sasl-pw", "ssl_cafile": "/etc/uvrd/ca.pem", "ssl_certfile": "/etc/uvrd/client.pem",
        "ssl_keyfile": "/etc/uvrd/client.key", "ssl_password": "key-pw", "ssl_check_hostname": True}


def test_hostname_checking_can_only_be_turned_off_explicitly():
    relaxed = KafkaConfig(security_protocol="SSL", ssl_check_hostname=False)
    assert clients.client_settings(relaxed)["ssl_check_hostname"] is False
    assert clients.client_settings(KafkaConfig(security_protocol="SSL"))["ssl_check_hostname"] is True


@pytest.mark.parametrize("client", [KafkaProducer, KafkaConsumer, KafkaAdminClient])
def test_every_setting_is_one_each_kafka_python_client_takes(client):
    """kafka-python refuses unknown keys: a key one client lacked would break that daemon only under TLS/SASL."""
    assert set(clients.client_settings(SASL_SSL)) <= set(client.DEFAULT_CONFIG)


def test_no_kafka_client_is_built_outside_the_settings_function():
    """Every producer, consumer and admin client (daemons, api, status board, dev stack) starts from
    client_settings: one built elsewhere would silently talk PLAINTEXT to a SASL_SSL cluster."""
    builders = {}
    for path in UVRD.rglob("*.py"):
        for match in re.finditer(r"\bKafka(Producer|Consumer|AdminClient)\(", path.read_text()):
            builders.setdefault(path.relative_to(UVRD).as_posix(), set()).add(match.group(1))
    assert builders == {"kafka/clients.py": {"Producer", "Consumer"}, "boards/topics.py": {"AdminClient"}}
    assert "client_settings(config.kafka)" in (UVRD / "cli/dev.py").read_text()
