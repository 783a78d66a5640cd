"""The engine child: load the models once, then separate each job the parent sends, answering each with
one typed message (engine_protocol.py); two jobs may be in it at once, taking turns (device_gate.py).

Runs in a process started with the ``spawn`` method; only the child imports torch and
audio-separator.  This module is its protocol loop: the load and warm-up of the configured model,
then, per job, the one-task pipeline (engine_job.py) and the answer that says how it ended.  The
models themselves are kept in model_cache.py.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
import re
import signal
import threading
import time
from collections.abc import Callable

import structlog

from uvrd.processor import audio_probe, device_check, device_gate, engine_warmup, heap_freeze, progress_meter
from uvrd.processor.engine_job import separate
from uvrd.processor.engine_protocol import (Fatal, For, Forget, Job, JobCancelled, JobFailed, JobOutcome, Loaded,
                                            ModelLoaded, NoSpace, Separated, Warming)
from uvrd.processor.model_cache import ModelCache
from uvrd.runtime import logs, parent_death
from uvrd.separation_options import OptionError

# Errors from audio-separator that mean the model named in the config cannot be used at all.
_UNKNOWN_MODEL = re.compile(r"not found in supported model files|Unsupported Model File|Model type not supported")

log = structlog.get_logger("uvrd.engine.child")


def main(conn, heartbeat, settings, cancel=None) -> None:
    """*cancel*: a shared number, the parent's :attr:`Job.number` of the job it wants stopped."""
    set_up(heartbeat, settings)
    send = Sender(conn)
    meters = progress_meter.Meters(progress_meter.Meter(send, lambda: False))
    models: ModelCache  # declared first: the lambda below reads it, so mypy cannot infer it
    models = ModelCache(settings, meters,
                        lambda model: send(ModelLoaded(models.described[model], tuple(models.described))))
    gate = device_gate.Gate()
    device_gate.install(gate)
    ready = _load(models, settings, send)
    if isinstance(ready, Fatal):
        send(ready)
        return
    heap_freeze.freeze()  # loaded and warmed up: what is alive now lives as long as the child
    send(ready)
    serve_jobs(conn, send, meters, Cancellations(cancel), functools.partial(separate, models), gate)


# Jobs in the child at once: the one in the model and the next, sent ahead by the pipeline.
MAX_JOBS = 2


def serve_jobs(conn, send: Sender, meters: progress_meter.Meters, cancellations: Cancellations,
               separate_job: Callable[[Job], dict[str, str]], gate: device_gate.Gate) -> None:
    """Answer each job the parent sends, on a thread of its own through *gate* (two at most at once),
    until the parent is gone.  (The service tests' scripted child serves its jobs through this loop
    too, with its own *separate_job*.)"""
    running: list[threading.Thread] = []
    while (message := _next_message(conn)) is not None:
        if isinstance(message, Forget):
            cancellations.forget(message.job)
            continue
        running = [thread for thread in running if thread.is_alive()]
        if len(running) >= MAX_JOBS:  # the parent sends no more than that: kept to, whatever it sends
            running.pop(0).join()
        thread = threading.Thread(target=_serve, args=(message, send, meters, cancellations, separate_job, gate),
                                  name=f"job-{message.number}", daemon=True)
        thread.start()
        running.append(thread)


def _serve(job: Job, send: Sender, meters: progress_meter.Meters, cancellations: Cancellations,
           separate_job: Callable[[Job], dict[str, str]], gate: device_gate.Gate) -> None:
    """One job's thread: its turn through the gate, its progress and its answer under its number."""
    logs.bind_task(task_uuid=job.task_uuid)
    meter = progress_meter.Meter(lambda progress: send(For(job.number, progress)),
                                 lambda: cancellations.requested(job.number))
    try:
        with gate.turn(), meters.use(meter):
            send(For(job.number, answer(meter, job, separate_job)))
    except OSError:
        pass  # the parent is gone (the pipe closed under the answer): nobody to tell
    finally:
        cancellations.done(job.number)


class Sender:
    """The pipe's sending end, shared by the jobs' threads: one message at a time."""

    def __init__(self, conn):
        self._conn = conn
        self._lock = threading.Lock()

    def __call__(self, message) -> None:
        with self._lock:
            self._conn.send(message)


class Cancellations:
    """Which jobs the parent wants stopped: the shared *cancel* holds the number of the one in the
    model it cancelled; a job sent ahead and then abandoned comes as a Forget through the pipe."""

    def __init__(self, cancel):
        self._cancel = cancel
        self._forgotten: set[int] = set()

    def requested(self, number: int) -> bool:
        return number in self._forgotten or (self._cancel is not None and self._cancel.value == number)

    def forget(self, number: int) -> None:
        self._forgotten.add(number)

    def done(self, number: int) -> None:
        self._forgotten.discard(number)


def set_up(heartbeat, settings) -> None:
    """What the child does before it loads anything."""
    # First, before the signals below are ignored: whoever sees SIGTERM ignored (SigIgn in
    # /proc/PID/status, as the fault suite reads it) knows that the child dies with its parent.
    parent_death.die_with_parent()
    # The worker alone decides when a separation ends: terminal Ctrl+C reaches
    # the whole process group, and systemd's KillMode=mixed signals only the
    # main process until its final SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Progress bars on stderr would fill the journal with carriage returns.
    os.environ["TQDM_DISABLE"] = "1"
    logs.configure("uvrd-engine")
    threading.Thread(target=_beat, args=(heartbeat,), daemon=True, name="heartbeat").start()
    if settings.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: no GPU for this engine


def _load(models: ModelCache, settings, send) -> Loaded | Fatal:
    """The configured model, loaded on the expected device and warmed up: Loaded, or the Fatal that
    says why it cannot serve (Warming is sent while it warms up)."""
    model = settings.models[0]
    try:
        started = time.monotonic()
        models.load(model)
        info = {"model": model, "device": models.device, "model_load_s": round(time.monotonic() - started, 2),
                "architecture": models.described[model]["architecture"],
                "execution_provider": models.described[model]["execution_provider"]}
    except Exception as e:  # the parent decides what a failed load means
        message = f"could not load model {model!r}: {type(e).__name__}: {e}"
        return Fatal(message, bool(_UNKNOWN_MODEL.search(str(e))))
    refused = device_check.refusal(settings.device, model, info["execution_provider"],
                                   os.environ.get("CUDA_VISIBLE_DEVICES"))
    if refused is not None:
        return Fatal(refused, True)  # the install's or the config's trouble: a restart would not mend it
    if settings.warm_up:
        send(Warming(dict(info)))
        try:
            info["warmup_s"] = round(models.warm(model).seconds, 2)
            info["stems"] = models.described[model]["stems"]
        except engine_warmup.WarmupFailed as e:
            # A model that cannot separate a clean clip cannot serve a task: the config's trouble, which
            # a restart does not mend, unless the warm-up only found the disk full.
            return Fatal(str(e), not _no_space(e))
    return Loaded({**info, "gpu_memory": _gpu_memory(), "described": models.described[model]})


def _next_message(conn) -> Job | Forget | None:
    """The next job (or Forget) the parent sends; None once the parent is gone."""
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return None
        if isinstance(message, Job | Forget):
            return message
        log.error("the engine was sent something that is neither a job nor a Forget; ignored",
                  got=type(message).__name__)


def answer(meter: progress_meter.Meter, job: Job, separate_job: Callable[[Job], dict[str, str]]) -> JobOutcome:
    """Separate *job*: the one message that says how it ended."""
    started = time.monotonic()
    meter.begin(len(job.plan.models) if job.plan else 1)
    try:
        meter.model(0, f"separating with {job.model}")
        stems = separate_job(job)
    except progress_meter.Cancelled:
        log.info("separation cancelled", after_s=round(time.monotonic() - started, 2))
        return JobCancelled()
    except audio_probe.Unusable as e:
        log.warning("input refused", error=str(e))
        return JobFailed(str(e), "unusable_audio")
    except OptionError as e:
        log.warning("options refused", error=str(e))
        return JobFailed(f"the task's options are refused: {e}", "options")
    except Exception as e:
        log.warning("separation failed", error=f"{type(e).__name__}: {e}")
        return (NoSpace if _no_space(e) else JobFailed)(_describe(e, job))
    finally:
        meter.end()
    return Separated(stems, time.monotonic() - started, _audio_seconds(job.audio_path), _gpu_memory())


def _audio_seconds(path: str) -> float | None:
    """The input's length for the metrics' seconds per audio second; None if its header does not say."""
    try:
        return audio_probe.probe(path).seconds
    except Exception:
        return None


def _gpu_memory() -> tuple[int, int] | None:
    """The device's (used, total) bytes, every process's, for the metrics: ONNX Runtime's arena is
    invisible to torch's own counters, the device's free memory is not.  None when torch has not
    set up CUDA in this child (a CPU engine): asking would create a CUDA context just to measure it,
    and a child that never imported torch has none."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        free, total = torch.cuda.mem_get_info()
    except Exception:
        return None
    return total - free, total


# Exceptions that mean "this input is not audio ffmpeg/libsndfile can decode".
_UNDECODABLE = {"NoBackendError", "LibsndfileError", "CouldntDecodeError", "AudioFileError", "InvalidAudioDataError"}


def _no_space(e: BaseException | None) -> bool:
    """A full disk anywhere in the chain; audio-separator rewraps OSErrors, keeping only their text."""
    seen = 0
    while e is not None and seen < 10:
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or f"[Errno {errno.ENOSPC}]" in str(e):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


# torch's CUDA allocator ("CUDA out of memory"), its CPU allocator ("DefaultCPUAllocator: can't allocate
# memory", or "not enough memory" in older releases), onnxruntime's arena ("Failed to allocate memory")
# and numpy ("Unable to allocate") each say it their own way.
_OUT_OF_MEMORY = re.compile(r"out of memory|failed to allocate memory|unable to allocate|can't allocate memory|"
                            r"cannot allocate memory|not enough memory|std::bad_alloc", re.I)


def out_of_memory(e: BaseException) -> bool:
    """Whether *e* is an allocation the model's device (or this host) could not make."""
    return isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or bool(_OUT_OF_MEMORY.search(str(e)))


def _describe(e: Exception, job) -> str:
    """One line for the user: this host's directories are no business of theirs."""
    if type(e).__name__ in _UNDECODABLE:
        return f"{audio_probe.NOT_AUDIO}: {type(e).__name__}"
    if out_of_memory(e):
        # Not retried (a JobFailed): the same input would run out again, and a retry loop would hold
        # the worker; the sentence says what to change.
        return (f"separation failed: the model ran out of memory separating this input ({type(e).__name__}); "
                f"a smaller mdx_batch_size or a shorter input needs less")
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text.replace(job.workdir + os.sep, "").replace(job.audio_path, "the input")[:400]
    return f"separation failed: {type(e).__name__}: {text}" if text else f"separation failed: {type(e).__name__}"


def _beat(heartbeat) -> None:
    while True:
        heartbeat.value = time.monotonic()
        time.sleep(0.5)
