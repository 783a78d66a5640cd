"""An input decoded by the pipeline's fetch stage, beside the model, instead of by the engine child
before its forward (``processor.pipeline = true``).

audio-separator decodes its input inside ``separate``, between two forwards: 0.15 to 0.4 s for a
3-minute FLAC on this project's 2-core machine, with the accelerator idle (docs/bench.md, section
10).  For the inputs the child would decode with libsndfile (``librosa.load`` reads what libsndfile
knows, bounded_decode.py), :func:`decode_ahead` reads the same samples the same way (libsndfile,
float32, every frame) into a ``.npy`` file while the task before is in the model, and the child's
``librosa.load`` of the input reads that file instead (:func:`load`, through bounded_decode.py):
the same array, from the page cache.

Only what the child separates whole is decoded ahead: one or two channels, a length libsndfile
knows, within ``max_audio_seconds`` and short of chunking (long_audio.py streams a long input
itself).  Anything else (MP4, Matroska, surround, long inputs) is decoded by the child as before.
The file is one input's samples at most (float32: 21 MB a minute of stereo at 44.1 kHz, 109 MB at
the default chunk length plus overlap), under output_dir so that retention removes it after a crash, and it is
removed with the task's input.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from uvrd.processor import audio_probe

PREFIX = ".decoded-"
BLOCK_FRAMES = 1 << 18  # 6 s of audio at 44.1 kHz, 2 MB of stereo float32, a block


def decode_ahead(path: Path, directory: Path, task_uuid: str, max_seconds: float,
                 whole_up_to: float) -> Path | None:
    """*path*'s samples as libsndfile decodes them for ``librosa.load``, (frames, channels) float32, in
    a ``.npy`` file in *directory*; None where the child is to decode it itself (see the module).
    *whole_up_to*: the longest input the child separates whole (chunk plus overlap)."""
    import soundfile

    try:
        source = soundfile.SoundFile(str(path))
    except Exception:  # not libsndfile's: the child decodes it (and says why, if it cannot)
        return None
    target: Path | None = None
    try:
        with source:
            frames, channels, rate = source.frames, source.channels, source.samplerate
            if not (0 < frames < audio_probe.UNKNOWN_FRAMES and 0 < channels <= 2 and rate > 0) or \
                    frames / rate > min(max_seconds, whole_up_to):
                return None
            fd, name = tempfile.mkstemp(prefix=f"{PREFIX}{task_uuid}-", suffix=".npy", dir=directory)
            target = Path(name)
            # Written block by block with write(), never through a mapping: a full disk is then an
            # OSError here (the child decodes the input itself), where a store into a mapped page of a
            # full tmpfs is a SIGBUS that kills the processor (`make faults`: "exited with -7").
            # Only one block is ever in this process's heap.
            got = 0
            with os.fdopen(fd, "wb") as out:
                np.lib.format.write_array_header_1_0(
                    out, {"descr": np.lib.format.dtype_to_descr(np.dtype("<f4")), "fortran_order": False,
                          "shape": (frames, channels)})
                for block in source.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
                    out.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
                    got += len(block)
        if got != frames:  # shorter than its header says: the child's own decode reads what is there
            raise EOFError
        return target
    except Exception:  # any trouble (a damaged file, a full disk) is the child's decode's to tell
        remove(target)
        return None


def load(decoded: str, rate: int, offset: float, duration: float | None) -> np.ndarray:
    """The samples ``librosa.load`` reads with libsndfile before its ``to_mono`` and resampling, from a
    :func:`decode_ahead` file of a *rate* input: (channels, frames), or (frames,) for one channel."""
    samples = np.load(decoded)
    start = int(offset * rate)  # librosa's own frame arithmetic (its __soundfile_load)
    samples = samples[start:None if duration is None else start + int(duration * rate)]
    return samples[:, 0] if samples.shape[1] == 1 else samples.T


def remove(decoded: Path | None) -> None:
    if decoded is not None:
        with contextlib.suppress(FileNotFoundError):
            decoded.unlink()
