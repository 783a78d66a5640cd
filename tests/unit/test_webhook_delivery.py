"""One result's webhook delivery (attempts, backoff, outcome), in this process against real peers."""

from __future__ import annotations

import dataclasses
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings

from peers import OK, RawPeer, hostile_answers
from support import fuzz_examples, wait_until
from uvrd.config import Config, StorageConfig, UploaderConfig
from uvrd.outcomes import Abandoned, Delivered, GaveUp
from uvrd.storage import open_storage
from uvrd.uploader.delivery import MAX_REASON_CHARS, WebhookSender

FAST = UploaderConfig(webhook_secret="whsec", max_attempts=2, backoff_initial=0.01, backoff_max=0.02, timeout=5)


def result(hook_url: str, **fields) -> dict:
    return {"task_uuid": str(uuid.uuid4()), "success": False, "error_message": "x", "hook_url": hook_url, **fields}


@pytest.fixture
def peer():
    answers = {"bytes": OK}
    p = RawPeer(lambda path: answers["bytes"])
    p.answers = answers
    yield p
    p.close()


@settings(max_examples=fuzz_examples(), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(answer=hostile_answers())
def test_whatever_a_receiver_answers_the_delivery_ends_delivered_or_given_up(peer, answer):
    """The uploader's rule at the level where it lives (what the daemon test checks from outside)."""
    peer.answers["bytes"] = answer
    outcome = WebhookSender(FAST, allow_private=True, link=None).deliver(result(peer.url("/hook")), threading.Event())
    assert isinstance(outcome, (Delivered, GaveUp))
    if isinstance(outcome, GaveUp):
        assert outcome.reason and len(outcome.reason) <= MAX_REASON_CHARS


def test_a_webhook_whose_body_cannot_be_built_is_given_up_at_once_with_the_reason(peer, monkeypatch):
    """S3 stems with no credentials anywhere: boto3 cannot sign their links.  No attempt is made."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3 = open_storage(dataclasses.replace(Config(), storage=StorageConfig(backend="s3", bucket="b", region="eu-west-1")))
    sender = WebhookSender(FAST, allow_private=True, link=s3.link)
    outcome = sender.deliver(result(peer.url(), success=True, stems={"vocals": "uvrd/stems/u/vocals.wav"}),
                             threading.Event())
    assert outcome == GaveUp(0, "the webhook body could not be built: NoCredentialsError: "
                                "Unable to locate credentials", cause="unbuildable")
    assert peer.paths() == []


def test_a_reason_from_a_peer_is_bounded(peer):
    """A 60 KB status line ends up in the error text of the exception; not in the dead letter."""
    peer.answers["bytes"] = b"X" * 60000 + b"\r\n\r\n"
    outcome = WebhookSender(FAST, allow_private=True, link=None).deliver(result(peer.url()), threading.Event())
    assert isinstance(outcome, GaveUp) and outcome.attempts == 2
    assert outcome.reason.startswith("ProtocolError: ") and len(outcome.reason) <= MAX_REASON_CHARS
    assert outcome.reason.endswith("(after 2 attempts)")
    assert peer.paths() == ["/hook", "/hook"]


def test_a_retry_that_is_abandoned_ends_at_once(peer):
    peer.answers["bytes"] = b"HTTP/1.1 503 Busy\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n"
    cfg = dataclasses.replace(FAST, backoff_max=3600)
    abandon = threading.Event()
    box = {}
    thread = threading.Thread(target=lambda: box.update(outcome=WebhookSender(cfg, True, None).deliver(
        result(peer.url()), abandon)), daemon=True)
    thread.start()
    wait_until(lambda: peer.paths(), 10, "the first attempt")
    abandon.set()
    thread.join(10)
    assert not thread.is_alive() and isinstance(box["outcome"], Abandoned)
    assert peer.paths() == ["/hook"], "no second attempt"


def test_a_well_formed_answer_is_delivered(peer):
    outcome = WebhookSender(FAST, allow_private=True, link=None).deliver(result(peer.url()), threading.Event())
    assert outcome == Delivered(attempts=1, status=200)
