"""What an input file holds (length, rate, channels) and whether it can be separated.

Runs in the engine child, before the model sees the file: a file no model can
use is refused with a sentence that says why, instead of an error from deep
inside numpy, or an hour of work on a recording over the configured limit.
libsndfile reads the common formats' headers without decoding; ffprobe covers
the rest (MP4/M4A, Matroska), in its own process with a time limit.

A length read here comes from the file's header: it may refuse a file early,
but never lets one through, since a header can lie or say nothing.  The decode
itself stops at the limit (bounded_decode).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

from uvrd.runtime import parent_death

FFPROBE_TIMEOUT_S = 30.0
# libsndfile's frame count for a stream that does not say (a FLAC written to a pipe): SF_COUNT_MAX.
UNKNOWN_FRAMES = 2**63 - 1
NOT_AUDIO = "audio file could not be decoded (not audio, truncated, or a format ffmpeg cannot read)"


class Unusable(Exception):
    """The input cannot be separated; the message is meant for the user as it is."""


@dataclass(frozen=True)
class AudioInfo:
    seconds: float | None  # None: the container does not say
    rate: int
    channels: int


def probe(path: str) -> AudioInfo:
    import soundfile

    try:
        info = soundfile.info(path)
    except Exception:  # libsndfile does not know the format: ask ffmpeg
        return _ffprobe(path)
    if info.samplerate <= 0 or info.channels <= 0:
        raise Unusable(NOT_AUDIO)
    seconds = None if info.frames >= UNKNOWN_FRAMES else info.frames / info.samplerate
    return AudioInfo(seconds=seconds, rate=info.samplerate, channels=info.channels)


def check(info: AudioInfo, max_seconds: float) -> None:
    if info.seconds is not None and info.seconds <= 0:
        raise Unusable("audio file holds no audio (0 samples): there is nothing to separate")
    if info.seconds is not None and info.seconds > max_seconds:
        raise Unusable(f"audio is {_clock(info.seconds)} long, over {_limit(max_seconds)}")


def too_long(max_seconds: float, declared: float | None) -> str:
    """The refusal of audio whose decode ran past the limit, whatever its header said."""
    header = "its container declares no length" if declared is None else f"its header says {_clock(declared)}"
    return f"audio is longer than {_limit(max_seconds)}; {header}"


def _limit(max_seconds: float) -> str:
    return f"this processor's limit of {_clock(max_seconds)} (processor.max_audio_seconds = {max_seconds:g})"


def _ffprobe(path: str) -> AudioInfo:
    command = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
               "stream=sample_rate,channels,duration:format=duration", "-of", "json", "--", path]
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=FFPROBE_TIMEOUT_S,
                             stdin=subprocess.DEVNULL, preexec_fn=parent_death.preexec())
    except subprocess.TimeoutExpired:
        raise Unusable(f"{NOT_AUDIO}: probing it took over {FFPROBE_TIMEOUT_S:g} s") from None
    try:
        found = json.loads(run.stdout) if run.returncode == 0 else {}
        stream = found.get("streams", [])[0]
        rate, channels = int(stream["sample_rate"]), int(stream["channels"])
    except (ValueError, LookupError, TypeError, AttributeError):
        raise Unusable(NOT_AUDIO) from None
    if rate <= 0 or channels <= 0:
        raise Unusable(NOT_AUDIO)
    seconds = _seconds(stream.get("duration"))
    if seconds is None:
        seconds = _seconds((found.get("format") or {}).get("duration"))
    return AudioInfo(seconds=seconds, rate=rate, channels=channels)


def _seconds(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 60 else f"{seconds:g} s"
