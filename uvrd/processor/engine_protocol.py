"""What the processor and its engine child exchange, as typed messages.

The parent sends a :class:`Job` (and :class:`Forget` for a job sent ahead that is not wanted any more); the child answers with one of :data:`EngineMessage`: while it
starts, Warming then Loaded (or Fatal); for each job, any number of Progress (and a ModelLoaded
when it loaded a model for the job), then Separated,
JobFailed, NoSpace or JobCancelled, each inside a :class:`For` that names its job.  Both sides ``match`` on the type.  A cancellation goes the
other way through a shared number, not the pipe: the child reads it between two steps of its
separation loop, while the pipe's next message is still unread.  Apart from ``engine`` (the parent's side) so that the child's side,
``engine_child``, needs nothing of the parent.
"""

from __future__ import annotations

from dataclasses import dataclass

from uvrd.outcomes import FailureCause
from uvrd.separation_options import NO_OPTIONS, SeparationOptions
from uvrd.separation_plan import Plan


@dataclass(frozen=True)
class EngineSettings:
    model_dir: str
    output_dir: str
    models: tuple[str, ...]
    output_format: str
    mdx_hop_length: int
    mdx_segment_size: int
    mdx_batch_size: int
    max_audio_seconds: float = 43200.0
    # Longer inputs are separated in pieces this long plus the overlap, crossfaded (long_audio.py).
    chunk_seconds: float = 300.0
    chunk_overlap_seconds: float = 10.0
    max_loaded_models: int = 3  # the least recently used beyond it is unloaded (model_cache.py)
    device: str = "auto"  # processor.device: where the models are expected to run (device_check.py)
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
    number: int = 0  # the parent's count of jobs sent: a cancellation names the job it is for
    options: SeparationOptions = NO_OPTIONS
    plan: Plan | None = None  # several models or an ensemble; None: *model* alone
    # The pipeline's store stage encodes the stems where it can (stem_encoding.py): the child may
    # leave them as WAV files of the samples it would have encoded.
    encode_later: bool = False
    # The input's samples, decoded by the pipeline's fetch stage while the task before was in the
    # model (decoded_input.py): the child reads them instead of decoding the input itself.
    decoded: str | None = None


# -- the child's answers --------------------------------------------------------------------------
@dataclass(frozen=True)
class Fatal:
    """The model could not load (or could not separate the warm-up clip): the child exits."""

    message: str
    config_problem: bool  # a restart does not mend it (an unknown model, a broken file)


@dataclass(frozen=True)
class Warming:
    """Loaded; separating the warm-up clip."""

    info: dict


@dataclass(frozen=True)
class Loaded:
    """Ready for jobs."""

    info: dict  # model, device, model_load_s, warmup_s, execution_provider; "described": as ModelLoaded's


@dataclass(frozen=True)
class Separated:
    stems: dict[str, str]  # stem name -> file
    seconds: float  # the separation's own time in the child
    audio_seconds: float | None = None  # the input's length, if its header says
    gpu_memory: tuple[int, int] | None = None  # the device's (used, total) bytes after the job; None on a CPU


@dataclass(frozen=True)
class ModelLoaded:
    """A model a task named was loaded (and warmed up) for it: model, architecture, stems, device, warm;
    *loaded* names every model the child holds now (one may have been unloaded to make room)."""

    info: dict
    loaded: tuple[str, ...] = ()


@dataclass(frozen=True)
class Progress:
    """How far the job has got: *fraction* from 0 to 1, never less than the last one sent."""

    fraction: float
    step: str
    parts: int = 1  # separations the job is in (its models times a long input's chunks): job_timeout is per part


@dataclass(frozen=True)
class JobCancelled:
    """The job stopped at the parent's request; the model stays loaded."""


@dataclass(frozen=True)
class JobFailed:
    """The input's trouble (not audio, too long, a model error): the task fails."""

    error: str
    cause: FailureCause = "separation"  # the Failed outcome's (outcomes.py)


@dataclass(frozen=True)
class NoSpace:
    """Failed for want of disk space: the host's trouble, not the input's; the job may run again."""

    error: str


JobOutcome = Separated | JobFailed | NoSpace | JobCancelled
EngineMessage = Fatal | Warming | Loaded | ModelLoaded | Progress | JobOutcome


@dataclass(frozen=True)
class For:
    """A job's Progress or outcome, with the number of the job it is for: the child may hold two jobs
    (the pipeline sends the next one while the one before runs, device_gate.py).  A bare Progress or
    outcome is for the job that was sent first of those unanswered."""

    job: int
    message: Progress | JobOutcome


@dataclass(frozen=True)
class Forget:
    """The parent's: the job numbered *job* is not wanted any more (its task was abandoned before
    its turn); the child stops it at its next step, as a cancellation, and the answer is dropped."""

    job: int
