"""A scripted engine child for the service tests: the real protocol, real stem files, no torch.

It stands in for ``engine_child.main`` (same signature, started by the real :class:`Engine` as a
spawned process), so that the processor's storage, results and settlement run for real around a
separation whose length and fate the test chooses.  The test chooses through what the task
carries, its input file's name (:func:`input_name`), and through the configured model for what
happens before any task:

- ``<uuid>.wav`` or any name not below: probed as the real child probes it (a file that is not
  audio fails as it would), then two stems, ``vocals`` and ``instrumental``, each the input at half
  its amplitude, written into the job's work directory as the real child names them;
- ``slow-<N>s-…``: the same after N seconds, in steps that report progress and honour a cancellation
  (the real child's progress meter does both);
- ``hang-…``: never ends by itself; its heartbeat goes on, as a long separation's does;
- ``crash-once-…``: the first run SIGKILLs its own child mid-job (as the OOM killer would), the
  next one separates;
- model ``dies-loading-once…``: the first child is SIGKILLed while it loads the model; its
  replacement loads it.

"Once" is counted by a marker file under the output directory: each run is a fresh child.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid
import wave
from pathlib import Path

import numpy as np

from uvrd.processor import audio_probe, engine_child, progress_meter
from uvrd.processor.engine import Engine
from uvrd.processor.engine_protocol import (EngineSettings, Job, JobCancelled, JobFailed, Loaded, NoSpace, Separated,
                                            Warming)
from uvrd.runtime import parent_death
from uvrd.separation_options import OptionError

_BEHAVIOUR = re.compile(r"^(?:(?P<slow>slow-(?P<seconds>\d+(?:\.\d+)?)s)|(?P<name>hang|crash-once))-")
STEP_S = 0.1  # a slow job's steps: each a progress report (at most every 0.5 s) and a cancellation point
STEMS = ("vocals", "instrumental")
INFO = {"device": "cpu", "architecture": "MDX", "execution_provider": "CPUExecutionProvider"}


def engine(settings: EngineSettings) -> Engine:
    """The Processor's engine factory: the real Engine, its child this script."""
    return Engine(settings, child=main)


def input_name(behaviour: str, suffix: str = ".wav") -> str:
    """A spool file name that asks for *behaviour* (``slow-3s``, ``hang``, ``crash-once``)."""
    if not _BEHAVIOUR.match(f"{behaviour}-"):
        raise ValueError(f"the scripted engine has no behaviour {behaviour!r}")
    return f"{behaviour}-{uuid.uuid4()}{suffix}"


def main(conn, heartbeat, settings: EngineSettings, cancel=None) -> None:
    # As the real child: the worker alone decides when a job ends, and the child dies with it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent_death.die_with_parent()
    threading.Thread(target=engine_child._beat, args=(heartbeat,), daemon=True, name="heartbeat").start()
    model = settings.models[0]
    if model.startswith("dies-loading-once") and _first_time(settings, "dies-loading"):
        os.kill(os.getpid(), signal.SIGKILL)
    info = {"model": model, "model_load_s": 0.0, **INFO}
    if settings.warm_up:
        conn.send(Warming(dict(info)))
    described = {"model": model, "stems": sorted(STEMS), "warm": settings.warm_up, **INFO}
    conn.send(Loaded({**info, "warmup_s": 0.0, "stems": sorted(STEMS), "gpu_memory": None, "described": described}))
    job_now = 0  # the job being separated, for the cancellation (as the real child keeps it)
    meter = progress_meter.Meter(conn.send, lambda: job_now != 0 and cancel is not None and cancel.value == job_now)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        job_now = job.number
        meter.begin(1)
        started = time.monotonic()
        try:
            meter.model(0, f"separating with {job.model}")
            stems = _separate(job, settings, meter)
        except progress_meter.Cancelled:
            conn.send(JobCancelled())
        except audio_probe.Unusable as e:
            conn.send(JobFailed(str(e), "unusable_audio"))
        except OptionError as e:
            conn.send(JobFailed(f"the task's options are refused: {e}", "options"))
        except Exception as e:  # a full disk is the host's trouble, anything else the job's (as the real child)
            conn.send((NoSpace if engine_child._no_space(e) else JobFailed)(engine_child._describe(e, job)))
        else:
            conn.send(Separated(stems, time.monotonic() - started, engine_child._audio_seconds(job.audio_path)))
        finally:
            job_now = 0
            meter.end()


def _separate(job: Job, settings: EngineSettings, meter: progress_meter.Meter) -> dict[str, str]:
    audio_probe.check(audio_probe.probe(job.audio_path), settings.max_audio_seconds)
    found = _BEHAVIOUR.match(Path(job.audio_path).name)
    behaviour = found and (found["name"] or "slow")
    if behaviour == "hang":
        for _ in meter.tqdm(iter(int, 1)):  # endless; each turn a cancellation point
            time.sleep(STEP_S)
    elif behaviour == "slow":
        for _ in meter.tqdm(range(max(1, round(float(found["seconds"]) / STEP_S)))):
            time.sleep(STEP_S)
    elif behaviour == "crash-once" and _first_time(settings, f"crash-{job.task_uuid}"):
        for _ in meter.tqdm(range(2)):
            pass  # a progress report first: the crash is mid-job
        os.kill(os.getpid(), signal.SIGKILL)
    return engine_child._finished(_write_stems(job), job)


def _write_stems(job: Job) -> dict[str, str]:
    """Each stem the input at half its amplitude (they add up to it), written with the stdlib, so
    that a full disk raises the OSError a real write would."""
    if job.output_format != "wav":
        raise RuntimeError(f"the scripted engine writes wav only, not {job.output_format}")
    with wave.open(job.audio_path, "rb") as source:
        params, frames = source.getparams(), source.readframes(source.getnframes())
    if params.sampwidth == 2:
        frames = (np.frombuffer(frames, "<i2") // 2).astype("<i2").tobytes()
    stems = {}
    for stem in STEMS:
        stems[stem] = os.path.join(job.workdir, f"{stem}.wav")
        with wave.open(stems[stem], "wb") as out:
            out.setparams(params)
            out.writeframes(frames)
    return stems


def _first_time(settings: EngineSettings, what: str) -> bool:
    """Whether *what* happens for the first time in this output directory (and mark it so)."""
    marker = Path(settings.output_dir) / ".scripted-engine" / what
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        marker.touch(exist_ok=False)
    except FileExistsError:
        return False
    return True
