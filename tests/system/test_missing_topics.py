"""A topic missing on the broker (issue 26, defect 6): each daemon, started as systemd starts it,
exits with status 78 (the units' RestartPreventExitStatus) after one line naming the topic and the
kafka-topics.sh command that creates it, instead of running on without ever working.

The stack's topics exist on the test broker but one: the config names a topic nobody created.
"""

from __future__ import annotations

import uuid

import pytest
from separation_service import api_settings
from support import wait_until

from uvrd.broker.loopback import free_port
from uvrd.broker.tansu import TansuBroker
from uvrd.config import EX_CONFIG

# Bounds on waits, so that a test that fails ends: the processor loads and warms up its model
# before it connects; a missing topic is reported after the daemon looked again for 10 s.
EXIT_S = 240


def with_missing_topic(stack, key: str, name: str, missing: str) -> str:
    """The stack's config as *name*, its topics.<key> renamed to *missing*, which does not exist."""
    config = stack.write_config(name, api=api_settings())
    text = config.read_text()
    current = f'{key} = "{getattr(stack, key)}"'
    assert current in text
    config.write_text(text.replace(current, f'{key} = "{missing}"'))
    return config


def lines_naming(daemon, topic: str) -> list[str]:
    return [line for line in daemon.log_text().splitlines() if topic in line]


@pytest.mark.parametrize(("command", "key", "create"), [
    ("processor", "cancellations", "--partitions 1 --config cleanup.policy=compact"),
    ("uploader", "events", "--partitions 1 --config retention.ms=86400000"),
    ("api", "replays", "--partitions 1 --config cleanup.policy=compact"),
])
def test_a_daemon_whose_topic_is_missing_exits_78_naming_it_and_how_to_create_it(stack, command, key, create):
    missing = f"never-created-{uuid.uuid4().hex[:8]}"
    config = with_missing_topic(stack, key, f"{command}.toml", missing)
    daemon = stack.start(command, config=config)
    assert daemon.wait_exit(EXIT_S) == EX_CONFIG, daemon.log_text()[-3000:]

    [line] = lines_naming(daemon, missing)  # one line, and nothing else about it
    assert f"uvrd {command}: the Kafka topic {missing} does not exist" in line, line
    assert (f"kafka-topics.sh --bootstrap-server {stack.bootstrap} --create --topic {missing} {create}"
            in line), line
    assert "READY=1" not in daemon.notify.lines()
    if command == "api":
        assert not daemon.events("api worker ready"), "no worker may serve with a topic missing"


def test_an_api_started_before_kafka_answers_exits_78_once_it_does_and_a_topic_is_missing(stack, tmp_path):
    """The api serves while Kafka is away (/healthz answers); once Kafka answers, the same check
    ends it with 78 rather than workers that never get ready."""
    port = free_port()
    missing = f"never-created-{uuid.uuid4().hex[:8]}"
    config = with_missing_topic(stack, "cancellations", "late.toml", missing)
    config.write_text(config.read_text().replace(stack.bootstrap, f"127.0.0.1:{port}"))
    daemon = stack.start("api", config=config)
    wait_until(lambda: daemon.events("api worker ready") or daemon.proc.poll() is not None, EXIT_S,
               "a worker to serve while Kafka is away")
    assert daemon.proc.poll() is None, daemon.log_text()[-3000:]

    with TansuBroker(port=port, log_path=tmp_path / "late-broker.log") as late:
        late.create_uvrd_topics(stack.topics)  # every topic but the one the config renamed
        assert daemon.wait_exit(EXIT_S) == EX_CONFIG, daemon.log_text()[-3000:]
    # Its workers' readers of the missing topic said they could not read it; the check says why, once.
    [line] = [line for line in lines_naming(daemon, missing) if "kafka-topics.sh" in line]
    assert f"uvrd api: the Kafka topic {missing} does not exist" in line, line
    assert f"--create --topic {missing} --partitions 1 --config cleanup.policy=compact" in line, line
