"""At start, every daemon checks that the topics it reads or writes exist.

On a broker where one was not created (an external Kafka where a line of the README's topic list
was missed), a daemon would otherwise run without ever working: a reader of a missing topic never
gets a partition, a processor never takes a task, and ``systemctl status`` shows nothing wrong.
So a daemon that finds one missing looks again for a while (it may be being created beside it,
as ``uvrd dev`` and the tests do), then exits with status 78 (EX_CONFIG, which the units do not
restart) after one line naming each missing topic and the command that creates it.  ``uvrd
broker`` and ``uvrd dev`` create the topics before any daemon starts, so they never see this.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

import structlog
from kafka.admin import NewTopic
from kafka.errors import KafkaError

from uvrd.boards.topics import plan
from uvrd.config import Config, KafkaConfig, TopicsConfig
from uvrd.kafka import clients
from uvrd.runtime.deadline import Deadline

# A topic being created beside the daemon appears within this; a missing one is reported after it.
RECHECK_S = 10.0
RECHECK_INTERVAL_S = 0.5
log = structlog.get_logger("uvrd.topic_check")

# One metadata round trip; a broker slower than this counts as not answering (the caller retries).
ANSWER_TIMEOUT_MS = 5000


class TopicsMissing(Exception):
    """Topics a daemon needs do not exist; the message is the line to log."""

    def __init__(self, line: str, topics: tuple[str, ...]) -> None:
        super().__init__(line)
        self.topics = topics


def needed(role: str, topics: TopicsConfig) -> tuple[str, ...]:
    """The topics *role* (api, processor or uploader) reads or writes, task topics first."""
    tasks = tuple(topics.task_topics())
    by_role = {
        # Tasks in; results, dead letters, status, worker heartbeats and events out; cancellations read.
        "processor": (*tasks, topics.results, topics.dead_letter, topics.status, topics.cancellations,
                      topics.workers, topics.events),
        # Results and events in; status and dead letters out.
        "uploader": (topics.results, topics.events, topics.status, topics.dead_letter),
        # Tasks and cancellations out; every board read; dead letters replayed; the results' backlog counted.
        "api": (*tasks, topics.status, topics.cancellations, topics.workers, topics.dead_letter, topics.replays,
                topics.results),
    }
    return by_role[role]


def optional(role: str, topics: TopicsConfig) -> tuple[str, ...]:
    """Topics *role* uses that an upgrade may not have created yet: the api serves without them (the
    configured api.tokens work; adding a key, or a submission with an Idempotency-Key, answers 503
    naming the topic), so a deployment upgrades unchanged, and one line at start says what is missing."""
    return (topics.keys, topics.idempotency) if role == "api" else ()


def missing(wanted: Iterable[str], existing: Iterable[str]) -> tuple[str, ...]:
    have = set(existing)
    return tuple(dict.fromkeys(t for t in wanted if t not in have))


def create_command(kafka_config: KafkaConfig, topic: NewTopic) -> str:
    """The kafka-topics.sh command that creates *topic* as the README's topic list does (the
    replication factor is the cluster's default)."""
    bootstrap = ",".join(s.strip() for s in kafka_config.bootstrap_servers.split(",") if s.strip())
    parts = ["kafka-topics.sh", "--bootstrap-server", bootstrap, "--create", "--topic", topic.name,
             "--partitions", str(topic.num_partitions)]
    for key, value in sorted((topic.topic_configs or {}).items()):
        parts += ["--config", f"{key}={value}"]
    if kafka_config.security_protocol != "PLAINTEXT":
        parts += ["--command-config", "client.properties"]  # the cluster's credentials, as kafka.* gives them
    return " ".join(parts)


def report(role: str, absent: tuple[str, ...], config: Config) -> str:
    """One line: which topics are missing, and the commands that create them.  Task topics get
    broker.task_partitions partitions (how many processors can share the work)."""
    plans = {t.name: t for t in plan(config.topics, config.broker.task_partitions)}
    commands = "; ".join(create_command(config.kafka, plans[name]) for name in absent)
    noun = "topic" if len(absent) == 1 else "topics"
    verb = "does" if len(absent) == 1 else "do"
    return (f"uvrd {role}: the Kafka {noun} {', '.join(absent)} {verb} not exist on "
            f"{config.kafka.bootstrap_servers}; create {'it' if len(absent) == 1 else 'them'}: {commands}")


def check(config: Config, role: str, recheck_s: float = RECHECK_S,
          pause: Callable[[float], None] = time.sleep, on_answer: Callable[[], None] = lambda: None) -> None:
    """Return once every topic *role* needs exists; raise TopicsMissing if some are still missing
    after *recheck_s*, or a KafkaError if the broker does not answer (the caller retries that).
    *on_answer* is called once the broker has answered the first time."""
    wanted = needed(role, config.topics)
    consumer = clients.consumer(config.kafka, group_id=None, bootstrap_timeout_ms=ANSWER_TIMEOUT_MS,
                                request_timeout_ms=ANSWER_TIMEOUT_MS)
    try:
        existing = consumer.topics()
        on_answer()
        deadline = Deadline.after(recheck_s)
        while absent := missing(wanted, existing):
            if deadline.expired():
                raise TopicsMissing(report(role, absent, config), absent)
            pause(deadline.cap(RECHECK_INTERVAL_S))
            existing = consumer.topics()
        if absent := missing(optional(role, config.topics), existing):
            log.warning(report(role, absent, config) + " (until then, what needs it answers 503)",
                        missing_topics=list(absent))
    finally:
        consumer.close(autocommit=False)


class BackgroundCheck:
    """:func:`check` on a thread of its own, retried until the broker answers: for the api's
    gunicorn master, which must not wait for Kafka before it serves (/healthz answers, /readyz says
    Kafka is away) but must still stop, not serve for ever, when a topic is missing."""

    def __init__(self, config: Config, role: str, retry_s: float = 2.0) -> None:
        self._config = config
        self._role = role
        self._retry_s = retry_s
        self.answered = threading.Event()  # the broker answered once: the verdict follows within RECHECK_S
        self.done = threading.Event()
        self.problem: TopicsMissing | None = None
        self._thread = threading.Thread(target=self._run, name="topic-check", daemon=True)

    def start(self) -> BackgroundCheck:
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                check(self._config, self._role, on_answer=self.answered.set)
            except TopicsMissing as e:
                self.problem = e
            except KafkaError:
                time.sleep(self._retry_s)  # the broker is away: the workers say so; look again
                continue
            self.done.set()
            return
