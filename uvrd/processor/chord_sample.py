"""Generated audio: a chord and a little noise, any length.  The engine's warm-up clip, and the
sample the demo, the tests and the benchmarks use."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np


def write_sample(path: Path, seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0) -> Path:
    """A WAV of a chord plus noise: audible, deterministic, any length."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * rate)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        block = rate  # write a second at a time: a long sample never sits whole in memory
        for start in range(0, frames, block):
            t = np.arange(start, min(start + block, frames)) / rate
            mono = sum(0.2 * np.sin(2 * math.pi * f * t) for f in (220.0, 277.2, 329.6))
            mono = mono + 0.05 * rng.standard_normal(t.size)
            pcm = (np.clip(mono, -1, 1) * 32767).astype("<i2")
            w.writeframes(np.repeat(pcm[:, None], channels, axis=1).tobytes())
    return path
