"""Which topics a daemon needs, which are missing, and the line an operator reads when one is
(uvrd/boards/topic_check.py); the broker is a stand-in that answers a list of topics."""

from __future__ import annotations

import dataclasses

import pytest
import structlog.testing

from uvrd.boards import topic_check
from uvrd.config import BrokerConfig, Config, KafkaConfig, TopicsConfig

TASK_TOPICS = ("uvrd.tasks.p5", "uvrd.tasks.p4", "uvrd.tasks", "uvrd.tasks.p2", "uvrd.tasks.p1")
EVERY_TOPIC = (*TASK_TOPICS, "uvrd.results", "uvrd.dead-letter", "uvrd.status", "uvrd.cancellations",
               "uvrd.workers", "uvrd.events", "uvrd.replays", "uvrd.keys",
               "uvrd.idempotency")


def config(**kafka) -> Config:
    return Config(kafka=KafkaConfig(bootstrap_servers="k1:9092, k2:9092", **kafka), topics=TopicsConfig(),
                  broker=BrokerConfig(task_partitions=4))


def test_each_daemon_needs_the_topics_it_reads_or_writes():
    topics = TopicsConfig()
    assert topic_check.needed("processor", topics) == (
        *TASK_TOPICS, "uvrd.results", "uvrd.dead-letter", "uvrd.status", "uvrd.cancellations", "uvrd.workers",
        "uvrd.events")
    assert topic_check.needed("uploader", topics) == ("uvrd.results", "uvrd.events", "uvrd.status",
                                                      "uvrd.dead-letter")
    # The keys and idempotency topics came with an upgrade: the api serves without them, and says so.
    assert set(topic_check.needed("api", topics)) == set(EVERY_TOPIC) - {"uvrd.events", "uvrd.keys",
                                                                          "uvrd.idempotency"}
    assert topic_check.optional("api", topics) == ("uvrd.keys", "uvrd.idempotency")
    assert topic_check.optional("processor", topics) == topic_check.optional("uploader", topics) == ()
    renamed = dataclasses.replace(topics, cancellations="site.cancel")
    assert "site.cancel" in topic_check.needed("processor", renamed)


def test_missing_keeps_the_needed_order_and_names_each_once():
    assert topic_check.missing(["a", "b", "c", "b"], ["c", "x"]) == ("a", "b")
    assert topic_check.missing(["a"], ["a", "b"]) == ()


def test_the_line_names_the_missing_topic_and_the_command_that_creates_it():
    line = topic_check.report("processor", ("uvrd.cancellations",), config())
    assert "\n" not in line
    assert line == ("uvrd processor: the Kafka topic uvrd.cancellations does not exist on k1:9092, k2:9092; create "
                    "it: kafka-topics.sh --bootstrap-server k1:9092,k2:9092 --create --topic uvrd.cancellations "
                    "--partitions 1 --config cleanup.policy=compact")


def test_several_missing_topics_get_a_command_each_as_the_readme_lists_them():
    line = topic_check.report("api", ("uvrd.tasks.p5", "uvrd.results", "uvrd.events"), config())
    assert line.startswith("uvrd api: the Kafka topics uvrd.tasks.p5, uvrd.results, uvrd.events do not exist on ")
    commands = line.split("create them: ", 1)[1].split("; ")
    assert commands == [
        "kafka-topics.sh --bootstrap-server k1:9092,k2:9092 --create --topic uvrd.tasks.p5 --partitions 4",
        "kafka-topics.sh --bootstrap-server k1:9092,k2:9092 --create --topic uvrd.results --partitions 1",
        "kafka-topics.sh --bootstrap-server k1:9092,k2:9092 --create --topic uvrd.events --partitions 1 "
        "--config retention.ms=86400000",
    ]


def test_a_secured_cluster_command_takes_its_client_properties():
    line = topic_check.report("uploader", ("uvrd.status",), config(security_protocol="SASL_SSL"))
    assert line.endswith("--config cleanup.policy=compact --command-config client.properties")


class Broker:
    """Stands in for clients.consumer(): each topics() call answers the next list."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.closed = False

    def __call__(self, *args, **kwargs):
        return self

    def topics(self):
        return set(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])

    def close(self, autocommit=True):
        self.closed = True


def test_a_topic_created_while_the_daemon_looks_again_passes(monkeypatch):
    broker = Broker(EVERY_TOPIC[:-2], EVERY_TOPIC)
    monkeypatch.setattr(topic_check.clients, "consumer", broker)
    topic_check.check(config(), "processor", pause=lambda s: None)
    assert broker.closed and broker.answers == [EVERY_TOPIC]


def test_a_topic_still_missing_after_the_recheck_is_reported_with_its_command(monkeypatch):
    broker = Broker([t for t in EVERY_TOPIC if t != "uvrd.cancellations"])
    monkeypatch.setattr(topic_check.clients, "consumer", broker)
    with pytest.raises(topic_check.TopicsMissing) as missing:
        topic_check.check(config(), "processor", recheck_s=0, pause=lambda s: None)
    assert missing.value.topics == ("uvrd.cancellations",)
    assert str(missing.value) == topic_check.report("processor", ("uvrd.cancellations",), config())
    assert broker.closed


def test_a_topic_only_another_daemon_needs_is_not_asked_for(monkeypatch):
    monkeypatch.setattr(topic_check.clients, "consumer", Broker([t for t in EVERY_TOPIC if t != "uvrd.replays"]))
    topic_check.check(config(), "processor", recheck_s=0)
    topic_check.check(config(), "uploader", recheck_s=0)
    with pytest.raises(topic_check.TopicsMissing):
        topic_check.check(config(), "api", recheck_s=0)


def test_an_api_upgraded_before_its_new_topics_exist_serves_and_says_what_to_create(monkeypatch):
    monkeypatch.setattr(topic_check.clients, "consumer",
                        Broker([t for t in EVERY_TOPIC if t not in ("uvrd.keys", "uvrd.idempotency")]))
    with structlog.testing.capture_logs() as logs:
        topic_check.check(config(), "api", recheck_s=0)
    [line] = logs
    assert line["log_level"] == "warning" and line["missing_topics"] == ["uvrd.keys", "uvrd.idempotency"]
    assert line["event"].startswith(topic_check.report("api", ("uvrd.keys", "uvrd.idempotency"), config()))
