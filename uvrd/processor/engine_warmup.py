"""The warm-up separation a model runs once it is loaded, before it serves any task.

Loading a model leaves one-off costs to its first separation: librosa's lazy imports and the
numba compilation of its ufuncs (a fresh install has no numba cache), the first run of torch and
onnxruntime, the first ffprobe and ffmpeg encode.  Without a warm-up the first task after READY paid
them: with the tiny model on 2 cores (``make bench``, section 8), about 14 s more than the tasks after
it on a fresh install and 1 to 2 s more on a used one.  So the engine separates a short generated
clip first, through the very path and output format of a task, and reports ready only after it.

The clip and its stems live in a temporary directory of their own, removed afterwards: the warm-up
never touches the spool or the output directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uvrd.processor.chord_sample import write_sample

# Long enough for every architecture's first full pass (MDX and Demucs pad a segment to its
# full size anyway), short enough that the warm-up costs little beyond the one-off work.
CLIP_SECONDS = 1.0
CLIP_RATE = 44100


class WarmupFailed(Exception):
    """The model loaded but could not separate the warm-up clip: it cannot serve a task either."""


@dataclass(frozen=True)
class Warmup:
    model: str
    seconds: float  # the warm-up separation's own time
    stems: tuple[str, ...]  # the stems it wrote
    directory: str  # where it wrote them, with its clip: removed afterwards


def write_clip(path: Path, seconds: float = CLIP_SECONDS, rate: int = CLIP_RATE) -> Path:
    """A stereo 16-bit WAV of a chord and a little noise: what a song's separation meets."""
    return write_sample(path, seconds=seconds, rate=rate)


def run(model: str, separate: Callable[[str, str], dict[str, str]]) -> Warmup:
    """*separate(clip, workdir)* (a task's separation, returning its stems) on the warm-up clip, in a
    temporary directory removed afterwards; WarmupFailed, caused by the error, if any step fails."""
    scratch = None
    try:
        scratch = tempfile.mkdtemp(prefix="uvrd-warmup-")
        clip = write_clip(Path(scratch) / "clip.wav")
        workdir = Path(scratch) / "stems"
        workdir.mkdir()
        started = time.monotonic()
        stems = separate(str(clip), str(workdir))
        return Warmup(model, time.monotonic() - started, tuple(sorted(stems)), scratch)
    except Exception as e:
        why = f"{type(e).__name__}: {e}"
        if scratch is not None:  # gone by the time anyone reads this
            why = why.replace(scratch + os.sep, "")
        raise WarmupFailed(f"model {model!r} loaded, but its warm-up separation failed: {why}") from e
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
