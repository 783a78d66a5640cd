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
import time
import uuid
import wave
from pathlib import Path

import numpy as np

from uvrd.processor import audio_probe, device_gate, engine_child, engine_job, progress_meter
from uvrd.processor.engine import Engine
from uvrd.processor.engine_protocol import EngineSettings, Job, Loaded, Warming

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
    # Set up and answered as by the real child (engine_child.py): only the load and the separation
    # itself are scripted.
    engine_child.set_up(heartbeat, settings)
    model = settings.models[0]
    if model.startswith("dies-loading-once") and _first_time(settings, "dies-loading"):
        os.kill(os.getpid(), signal.SIGKILL)
    info = {"model": model, "model_load_s": 0.0, **INFO}
    send = engine_child.Sender(conn)
    if settings.warm_up:
        send(Warming(dict(info)))
    described = {"model": model, "stems": sorted(STEMS), "warm": settings.warm_up, **INFO}
    send(Loaded({**info, "warmup_s": 0.0, "stems": sorted(STEMS), "gpu_memory": None, "described": described}))
    meters = progress_meter.Meters(progress_meter.Meter(send, lambda: False))
    gate = device_gate.Gate()
    engine_child.serve_jobs(conn, send, meters, engine_child.Cancellations(cancel),
                            lambda job: _separate(job, settings, meters, gate), gate)


def _separate(job: Job, settings: EngineSettings, meter: progress_meter.Meters, gate: device_gate.Gate) -> dict[str, str]:
    audio_probe.check(audio_probe.probe(job.audio_path), settings.max_audio_seconds)
    found = _BEHAVIOUR.match(Path(job.audio_path).name)
    behaviour = found and (found["name"] or "slow")
    if behaviour == "hang":
        with gate.device():  # the "model": a job sent ahead prepares beside it, as in the real child
            for _ in meter.tqdm(iter(int, 1)):  # endless; each turn a cancellation point
                time.sleep(STEP_S)
    elif behaviour == "slow":
        with gate.device():
            for _ in meter.tqdm(range(max(1, round(float(found["seconds"]) / STEP_S)))):
                time.sleep(STEP_S)
    elif behaviour == "crash-once" and _first_time(settings, f"crash-{job.task_uuid}"):
        for _ in meter.tqdm(range(2)):
            pass  # a progress report first: the crash is mid-job
        os.kill(os.getpid(), signal.SIGKILL)
    return engine_job.finished(_write_stems(job), job)


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
