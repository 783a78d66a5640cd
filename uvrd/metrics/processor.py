"""What ``uvrd processor`` counts: its tasks by outcome, its separations' times, its engine's restarts
and memory, its drain.

:func:`settled` is called once per task record, after its outcome is committed (or, for an Abandoned
task, left uncommitted): the counts are what Kafka holds, not what was tried.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from uvrd.metrics import dead_letters
from uvrd.outcomes import Abandoned, Cancelled, Failed, Rejected, Succeeded

TASKS = Counter("uvrd_tasks", "Task records this processor settled, by outcome (refused, succeeded, failed, "
                "cancelled, abandoned) and reason", ["outcome", "reason"])
ACCEPTED = Counter("uvrd_tasks_accepted", "Tasks this processor took to run: the message passed its checks and "
                   "the input was fetched")
# From a second (the tiny model) to an hour-long input on a CPU.
SEPARATION = Histogram("uvrd_separation_seconds", "Separation time in the engine, by model and device",
                       ["model", "device"], buckets=(0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000))
# Below 0.01 on a GPU, around 1 on a CPU.
PER_AUDIO_SECOND = Histogram("uvrd_separation_seconds_per_audio_second",
                             "Separation time per second of input audio, by model and device", ["model", "device"],
                             buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ENGINE_RESTARTS = Counter("uvrd_engine_restarts", "Separation engine children replaced, by cause", ["cause"])
# device: the engine's torch device (cuda:0: each per-GPU unit sees its own GPU as the first).
GPU_MEMORY_USED = Gauge("uvrd_gpu_memory_used_bytes", "GPU memory in use on the engine's device (every process's), "
                        "as the engine last reported it", ["device"])
GPU_MEMORY_TOTAL = Gauge("uvrd_gpu_memory_total_bytes", "GPU memory of the engine's device", ["device"])


def accepted() -> None:
    ACCEPTED.inc()


def settled(outcome: Succeeded | Failed | Cancelled | Rejected | Abandoned) -> None:
    """Count *outcome*; a failure or a refusal is also a dead letter (results.settlement writes one)."""
    outcome_label, reason = labels(outcome)
    TASKS.labels(outcome_label, reason).inc()
    if isinstance(outcome, Failed | Rejected):
        dead_letters.written("processor", reason)


def labels(outcome: Succeeded | Failed | Cancelled | Rejected | Abandoned) -> tuple[str, str]:
    """The (outcome, reason) labels of *outcome*."""
    match outcome:
        case Succeeded():
            return "succeeded", ""
        case Failed(cause=cause):
            return "failed", cause
        case Rejected(cause=cause):
            return "refused", cause
        case Cancelled(started_at=started_at):
            return "cancelled", "before_start" if started_at is None else "while_running"
        case Abandoned(cause=cause):
            return "abandoned", cause
    raise TypeError(f"no labels for {outcome!r}")


def separated(model: str, device: str, seconds: float, audio_seconds: float | None) -> None:
    SEPARATION.labels(model, device).observe(seconds)
    if audio_seconds:
        PER_AUDIO_SECOND.labels(model, device).observe(seconds / audio_seconds)


def engine_restarted(cause: str) -> None:
    ENGINE_RESTARTS.labels(cause).inc()


def gpu_memory(device: str, used_bytes: int, total_bytes: int) -> None:
    GPU_MEMORY_USED.labels(device).set(used_bytes)
    GPU_MEMORY_TOTAL.labels(device).set(total_bytes)
