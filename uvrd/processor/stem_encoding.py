"""Stems whose encoding the pipeline moves out of the model's way (``processor.pipeline``).

audio-separator writes a FLAC stem by handing its 16-bit samples to an ffmpeg run (pydub): about
2 s per stem of a 3-minute song on this project's 2-core machine, while the model, the one thing an
accelerator runs, waits.  For a task the pipeline runs, the engine child writes those same 16-bit
samples as a WAV file instead (:func:`written_as_wav`, a fraction of that time), and the store stage
encodes it into FLAC (:func:`encode`) beside the next task's separation.  FLAC is lossless and the
samples are the ones audio-separator's writer would have given ffmpeg, so the stems hold the same
samples either way.

Only the plain case is moved: FLAC out of a 16-bit input, one model, separated whole, no sample rate
or bit depth option.  Any other task (chunks, ensembles, conversions, lossy formats, 24-bit) is
written by the child as before.
"""

from __future__ import annotations

import contextlib
import os
import wave
from collections.abc import Iterator
from pathlib import Path

from uvrd.processor import ffmpeg
from uvrd.processor.engine_protocol import Job

DEFERRED_FORMAT = "flac"
STAGE_NICENESS = 10


def deferrable(job: Job, bit_depth: int) -> bool:
    """Whether the child may leave *job*'s stems' encoding to the store stage."""
    return (job.encode_later and job.output_format == DEFERRED_FORMAT and job.plan is None and bit_depth == 16
            and job.options.get("sample_rate") is None and job.options.get("bit_depth") is None)


@contextlib.contextmanager
def written_as_wav(instance) -> Iterator[None]:
    """While it lasts, the loaded model *instance* writes each stem as a 16-bit WAV file of the samples
    its pydub writer would have encoded (the same normalisation, the same conversion to 16 bits)."""
    from audio_separator.separator.audio_io import validate_audio_source
    from audio_separator.separator.uvr_lib_v5 import spec_utils

    def write(stem_path: str, stem_source) -> None:
        source = validate_audio_source(stem_source)
        source = spec_utils.normalize(wave=source, max_peak=instance.normalization_threshold,
                                      min_peak=instance.amplification_threshold)
        if source.dtype.name != "int16":
            source = (source * 32767).astype("int16")  # common_separator.write_audio_pydub's conversion
        path = os.path.join(instance.output_dir, stem_path) if instance.output_dir else stem_path
        with wave.open(path, "wb") as out:
            out.setnchannels(1 if source.ndim == 1 else source.shape[1])
            out.setsampwidth(2)
            out.setframerate(instance.sample_rate)
            out.writeframes(source.astype("<i2").tobytes())

    saved_format = instance.output_format
    instance.output_format = "WAV"
    instance.write_audio_pydub = write  # an attribute of this instance: the class's writer is untouched
    try:
        yield
    finally:
        del instance.write_audio_pydub
        instance.output_format = saved_format


def encode(stems: dict[str, str], output_format: str) -> dict[str, str]:
    """The stems in *output_format*: each WAV left for the store stage encoded into FLAC, as
    audio-separator's pydub writer has ffmpeg do it (16-bit samples); the WAV removed."""
    if output_format != DEFERRED_FORMAT:
        return stems
    out = {}
    for stem, path in stems.items():
        if Path(path).suffix.lower() != ".wav":
            out[stem] = path
            continue
        target = str(Path(path).with_suffix(".flac"))
        # Niced: on a host short of cores, the engine child's own steps (what the model waits on) go first.
        why = ffmpeg.write(["-f", "wav", "-i", path, "-sample_fmt", "s16", "-f", "flac"], target, nice=STAGE_NICENESS)
        if why is not None:
            raise OSError(f"could not encode the stem {stem!r} into FLAC: {why}")
        os.unlink(path)
        out[stem] = target
    return out
