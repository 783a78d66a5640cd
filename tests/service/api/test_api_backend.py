"""A worker's readiness includes its own producer: a real KafkaProducer on the real broker whose
sender thread (where all of a producer's network I/O happens) is made to hang, or stopped."""

from __future__ import annotations

import threading

import pytest

from support import wait_until
from uvrd.api.backend import Backend
from uvrd.config import Config, KafkaConfig, TopicsConfig


@pytest.fixture
def backend(broker, request):
    prefix = f"backend-{request.node.name[:30]}"
    topics = TopicsConfig(tasks=f"{prefix}.tasks", results=f"{prefix}.results", dead_letter=f"{prefix}.dlq",
                          status=f"{prefix}.status")
    broker.create_uvrd_topics(topics)
    b = Backend(Config(kafka=KafkaConfig(bootstrap_servers=broker.bootstrap), topics=topics)).start()
    yield b
    b.close()


def ready(backend) -> bool:
    return backend.not_ready_reason() is None


def test_a_producer_whose_sender_hangs_is_not_ready_until_it_moves_again(backend):
    wait_until(lambda: ready(backend), 30, "the backend to be ready")
    sender = backend.producer()._sender
    stuck = threading.Event()
    run_once = sender.run_once
    sender.run_once = stuck.wait  # the thread blocks at its next turn, for real
    try:
        reason = wait_until(backend.not_ready_reason, 60, "the stuck producer to be noticed")
        assert reason == "the Kafka producer did not answer within 2 s"
    finally:
        sender.run_once = run_once
        stuck.set()
    wait_until(lambda: ready(backend), 10, "the producer to answer again")


def test_a_producer_whose_sender_died_is_replaced(backend):
    wait_until(lambda: ready(backend), 30, "the backend to be ready")
    dead = backend.producer()
    dead._sender.initiate_close()
    dead._sender.join(10)
    assert backend.not_ready_reason() == "the Kafka producer's I/O thread has stopped"
    wait_until(lambda: ready(backend), 15, "a new producer")
    assert backend.producer() is not dead and backend.producer()._sender.is_alive()
