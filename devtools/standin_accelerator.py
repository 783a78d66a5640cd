"""A stand-in accelerator, for the bench only: a model whose forward pass blocks for a fixed time per
second of audio without using the CPU, so that the share of time an accelerator would be busy can be
measured on a machine that has none.

It is the tiny MDX model (tinymodel.py) under a name of its own, run by the real audio-separator
path (decoding the input, normalising, writing the stems in the task's format), except that its
``demix``, the step a GPU would run, is a sleep of ``UVRD_STANDIN_S_PER_AUDIO_S`` seconds per second
of audio that yields stems of the right shape.  Each forward appends ``start end`` (the system's
monotonic clock, which the bench shares) to ``UVRD_STANDIN_BUSY_LOG``: the busy intervals.  Any other
MDX model loaded beside it (bench section 11: Spleeter on the CPU) runs its own ``demix``, timed and
logged the same way: the time the engine child spends in that model's forward.

It is never a servable model: the sleep only happens in an engine child started through
:func:`engine_child_main` (``python -m devtools.standin_processor``), which no installed unit runs;
the ordinary engine would run the tiny model's real graph instead.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from devtools import model_catalogue, tinymodel
from uvrd.processor import engine_child

MODEL = "UVRD-StandIn-Accelerator.onnx"
RATE_ENV = "UVRD_STANDIN_S_PER_AUDIO_S"
BUSY_LOG_ENV = "UVRD_STANDIN_BUSY_LOG"


def install(model_dir: Path) -> model_catalogue.InstalledModel:
    """The stand-in's file and catalogue entries in *model_dir* (the tiny model's graph, its own name)."""
    return tinymodel.install(model_dir, MODEL)


def engine_child_main(conn, heartbeat, settings, cancel=None) -> None:
    """The engine child's entry point (``Engine(child=...)``) with the stand-in's forward in place."""
    replace_forward(float(os.environ.get(RATE_ENV, "0.05")), os.environ.get(BUSY_LOG_ENV) or None)
    engine_child.main(conn, heartbeat, settings, cancel)


def replace_forward(seconds_per_audio_s: float, busy_log: str | None) -> None:
    """Make the stand-in model's demix a sleep; every other MDX model keeps its own.  Either way each
    forward (a demix that runs the model, not the secondary stem's match-mix pass) goes to *busy_log*."""
    from audio_separator.separator.architectures.mdx_separator import MDXSeparator

    real = MDXSeparator.demix
    name = Path(MODEL).stem

    def demix(self, mix, is_match_mix=False):
        standin = self.model_name == name
        if is_match_mix:
            # The secondary stem's pass: an STFT and its inverse, no model.  audio-separator then
            # subtracts the primary from the mix unless the model inverts by spectrogram, which the
            # stand-in does not: nothing to run for it.
            return mix if standin else real(self, mix, is_match_mix)
        started = time.monotonic()
        if standin:
            time.sleep(seconds_per_audio_s * mix.shape[-1] / self.sample_rate)  # the "kernel": no CPU
            source = mix * 0.5
        else:
            source = real(self, mix, is_match_mix)
        ended = time.monotonic()
        if busy_log is not None:
            with open(busy_log, "a") as f:
                f.write(f"{started:.6f} {ended:.6f}\n")
        return source

    MDXSeparator.demix = demix


def busy_intervals(path: Path) -> list[tuple[float, float]]:
    """The forwards logged in *path*, as (start, end) on the monotonic clock."""
    if not path.exists():
        return []
    return [(float(a), float(b)) for a, b in (line.split() for line in path.read_text().splitlines() if line.strip())]


def busy_share(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """The share of [start, end] that the forwards covered (they never overlap: one engine child)."""
    if end <= start:
        return float("nan")
    busy = sum(max(0.0, min(b, end) - max(a, start)) for a, b in intervals)
    return busy / (end - start)
