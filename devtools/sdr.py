"""How close a separated stem is to the true one: plain global SDR, and reading stems to measure.

``sdr(reference, estimate) = 10 * log10( sum(s**2) / sum((s - s_hat)**2) )``, summed over every
sample of every channel.  No gain, delay or filter is forgiven: a stem that is quieter, late, swapped,
resampled, clipped or cut short scores lower, which is what the quality tests want to see.  This is the
"new" SDR of the MDX challenges (``sdr`` in Sony's MDX 2021 scoring), not BSS Eval's (museval, the
SiSEC/MUSDB tables), which first fits a 512-tap filter from reference to estimate and reports the median
over one-second frames; BSS Eval figures are usually higher and are not comparable with these.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from uvrd.processor import audio_probe


@dataclass(frozen=True)
class Audio:
    samples: np.ndarray  # float32, [frames, channels], full scale +-1.0
    rate: int

    @property
    def frames(self) -> int:
        return self.samples.shape[0]

    @property
    def channels(self) -> int:
        return self.samples.shape[1]


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Global SDR in dB of *estimate* against *reference*, both [frames, channels] of the same shape
    (``fit`` an estimate of another length first).  +inf for an exact estimate."""
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} differ in shape")
    s = reference.astype(np.float64)
    error = float(np.sum((s - estimate.astype(np.float64)) ** 2))
    signal = float(np.sum(s ** 2))
    if error == 0.0:
        return math.inf
    return 10.0 * math.log10(signal / error) if signal > 0 else -math.inf


def fit(estimate: np.ndarray, frames: int) -> np.ndarray:
    """*estimate* cut or zero-padded to *frames*: what is missing counts as silence, so a truncated
    stem loses SDR for it, and what runs over is not scored.  Tests check lengths on their own."""
    if estimate.shape[0] >= frames:
        return estimate[:frames]
    return np.concatenate([estimate, np.zeros((frames - estimate.shape[0], estimate.shape[1]), estimate.dtype)])


def read_audio(path: Path, rate: int | None = None) -> Audio:
    """Any file ffmpeg decodes (every uvrd output format), at its own rate and channel count: nothing
    is resampled or remixed on the way, so a stem with the wrong rate or channels shows as such.
    Only where *rate* is given is it resampled to it (Opus always decodes at 48 kHz)."""
    try:
        info = audio_probe.probe(str(path))
    except audio_probe.Unusable as e:
        raise ValueError(f"could not decode {path.name}: {e}") from None
    run = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
                          *(["-ar", str(rate)] if rate else []),
                          "-f", "f32le", "-c:a", "pcm_f32le", "-"], capture_output=True, stdin=subprocess.DEVNULL,
                         check=False)
    if run.returncode != 0:
        raise ValueError(f"ffmpeg could not decode {path.name}: {run.stderr.decode(errors='replace')[-300:]}")
    samples = np.frombuffer(run.stdout, dtype="<f4").reshape(-1, info.channels)
    return Audio(samples.copy(), rate or info.rate)
