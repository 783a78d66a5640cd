"""Each typed outcome counts under its own labels: a refusal and a failure by their cause (and each
one dead letter), a delivery by how it ended.  The counters are prometheus_client's own, in this
process; each test reads how much they grew."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest
from prometheus_client import REGISTRY

from uvrd.config import ProcessorConfig
from uvrd.metrics import processor as processor_metrics
from uvrd.metrics import uploader as uploader_metrics
from uvrd.outcomes import Abandoned, Cancelled, Delivered, Failed, GaveUp, Rejected, Succeeded
from uvrd.processor.accept import accept

Record = namedtuple("Record", "topic partition offset key value")


def value(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("outcome, labels", [
    (Succeeded({}, "m.onnx", "t0"), ("succeeded", "")),
    (Failed("the engine said no", cause="runs_exhausted"), ("failed", "runs_exhausted")),
    (Rejected("unknown model 'x'", cause="unknown_model"), ("refused", "unknown_model")),
    (Cancelled("t0"), ("cancelled", "before_start")),
    (Cancelled("t0", started_at="t1"), ("cancelled", "while_running")),
    (Abandoned("the partition was reassigned to another worker", "rebalance"), ("abandoned", "rebalance")),
    (Abandoned("the drain window ended before the separation did"), ("abandoned", "stop")),
])
def test_a_settled_task_counts_once_under_its_outcome_and_reason(outcome, labels):
    before = value("uvrd_tasks_total", outcome=labels[0], reason=labels[1])
    processor_metrics.settled(outcome)
    assert value("uvrd_tasks_total", outcome=labels[0], reason=labels[1]) == before + 1


@pytest.mark.parametrize("outcome", [Failed("x", cause="stems_store"), Rejected("x", cause="stems_store")])
def test_a_failed_or_refused_task_is_one_dead_letter_of_the_processor(outcome):
    before = value("uvrd_dead_letters_total", stage="processor", reason="stems_store")
    processor_metrics.settled(outcome)
    assert value("uvrd_dead_letters_total", stage="processor", reason="stems_store") == before + 1


@pytest.mark.parametrize("outcome", [Succeeded({}, "m", "t0"), Cancelled("t0"), Abandoned("second stop signal")])
def test_no_other_outcome_is_a_dead_letter(outcome):
    before = value("uvrd_dead_letters_total", stage="processor", reason="")
    total = sum(s.value for m in REGISTRY.collect() if m.name == "uvrd_dead_letters" for s in m.samples
                if s.name.endswith("_total"))
    processor_metrics.settled(outcome)
    after = sum(s.value for m in REGISTRY.collect() if m.name == "uvrd_dead_letters" for s in m.samples
                if s.name.endswith("_total"))
    assert after == total and value("uvrd_dead_letters_total", stage="processor", reason="") == before


CFG = ProcessorConfig(model="a.onnx", extra_models=("b.onnx",))


@pytest.mark.parametrize("task, cause", [
    ({"model": "nope.onnx"}, "unknown_model"),
    ({"output_format": "exe"}, "unknown_output_format"),
    ({"storage": "s3", "audio_key": "uvrd/inputs/x.wav", "audio_path": None}, "other_storage"),
    ({"ensemble": {"preset": "nope"}}, "plan"),  # well formed, but no such preset
    ({"task_uuid": "../../etc"}, "unreadable"),
])
def test_each_refusal_of_accept_names_its_cause(task, cause):
    body = {"task_uuid": "0b7e4f5c-6a43-4b8e-9a39-0f3c2a1d9e10", "audio_path": "/spool/x.wav", "hook_url": None,
            **task}
    got = accept(Record("t", 0, 0, None, json.dumps(body).encode()), CFG, "local")
    assert isinstance(got, Rejected) and got.cause == cause, got


def test_an_unreadable_message_is_refused_as_unreadable():
    got = accept(Record("t", 0, 0, None, b"{not json"), CFG, "local")
    assert isinstance(got, Rejected) and got.cause == "unreadable"


def test_the_separation_times_go_by_model_and_device_and_per_audio_second():
    labels = {"model": "unit.onnx", "device": "cpu"}
    processor_metrics.separated("unit.onnx", "cpu", 6.0, 3.0)
    processor_metrics.separated("unit.onnx", "cpu", 1.0, None)  # a length the header did not say: time only
    assert value("uvrd_separation_seconds_count", **labels) == 2
    assert value("uvrd_separation_seconds_sum", **labels) == 7.0
    assert value("uvrd_separation_seconds_per_audio_second_count", **labels) == 1
    assert value("uvrd_separation_seconds_per_audio_second_sum", **labels) == 2.0


@pytest.mark.parametrize("outcome, labels, dead_letter", [
    (Delivered(1, 200), ("delivered", ""), None),
    (GaveUp(8, "the webhook answered HTTP 503 (after 8 attempts)"), ("gave_up", "attempts_exhausted"),
     "attempts_exhausted"),
    (GaveUp(1, "the webhook answered HTTP 410", "refused"), ("gave_up", "refused"), "refused"),
    (Abandoned("the delivery was abandoned"), ("abandoned", ""), None),
])
def test_a_delivery_counts_by_how_it_ended_and_a_given_up_one_is_a_dead_letter(outcome, labels, dead_letter):
    before = value("uvrd_webhook_deliveries_total", outcome=labels[0], reason=labels[1])
    letters = value("uvrd_dead_letters_total", stage="uploader", reason=dead_letter or "")
    uploader_metrics.delivered(outcome)
    assert value("uvrd_webhook_deliveries_total", outcome=labels[0], reason=labels[1]) == before + 1
    assert value("uvrd_dead_letters_total", stage="uploader", reason=dead_letter or "") == \
        letters + (1 if dead_letter else 0)
