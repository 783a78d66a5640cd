"""What the processor and its engine child exchange: the engine's settings, a job, its result.

Apart from ``engine`` (the parent's side) so that the child's side, ``engine_worker``, can name a
job without importing the parent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineSettings:
    model_dir: str
    output_dir: str
    models: tuple[str, ...]
    output_format: str
    mdx_hop_length: int
    mdx_segment_size: int
    mdx_batch_size: int
    max_audio_seconds: float = 3600.0
    # Each model separates a short clip once loaded, before it serves a task (engine_warmup.py).
    # Off only in the benchmark of what the first task paid without it.
    warm_up: bool = True


@dataclass(frozen=True)
class Job:
    task_uuid: str
    audio_path: str
    model: str
    output_format: str
    workdir: str


@dataclass(frozen=True)
class JobResult:
    ok: bool
    stems: dict[str, str]  # stem name -> file, when ok
    error: str = ""
    no_space: bool = False  # failed for want of disk space: the host's trouble, not the input's
    seconds: float | None = None  # the separation's own time in the child, when ok
