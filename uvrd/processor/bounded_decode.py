"""Decoding that stops at the processor's length limit, whatever the file's header says.

audio-separator 0.47 decodes its input with ``librosa.load`` and no duration: in
``CommonSeparator.prepare_mix`` (MDX, MDXC, Demucs), in ``VRSeparator.loading_mix`` and in
the helpers of ``uvr_lib_v5.spec_utils``.  librosa reads what libsndfile knows (WAV, FLAC,
MP3, Ogg, AIFF) as far as the header says, and hands anything else (MP4/M4A, Matroska/WebM,
raw AAC) to audioread, whose ffmpeg decodes to the end of the stream, whatever the container
declares, into a queue with no limit.  So an M4A whose header says 1 s was separated whole,
and so was a Matroska stream, which declares no length at all: one hour of silence, 1.7 MB
of Opus, took 5.3 GB to decode and resample.

While a job runs, :func:`limited` puts a bounded ``load`` where audio-separator looks
``librosa.load`` up (the librosa module; no caller binds the function itself; the chunked mode,
which decodes with pydub instead, is never turned on here):

- what libsndfile reads (and knows the length of) is read for at most the limit plus a margin;
- anything else is decoded by ffmpeg, cut off with ``-t`` at the same bound, into an array of
  that size, and resampled the way librosa would;

and audio that reaches past the limit ends the job with a sentence that says so.  A length
in a header can refuse a file early (:func:`audio_probe.check`); it never lets one through.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import threading
import subprocess

import numpy as np

from uvrd.processor import audio_probe, decoded_input
from uvrd.runtime import parent_death

# Codec priming and padding: a decode may run this far past a length within the limit.
PADDING_S = 0.5
# Read this far past the limit: audio that fills it is longer than the limit plus padding.
MARGIN_S = 2 * PADDING_S


def bound(max_seconds: float) -> float:
    """How many seconds any decode of one input may produce."""
    return max_seconds + MARGIN_S


@contextlib.contextmanager
def limited(max_seconds: float, path: str, info: audio_probe.AudioInfo, decoded: str | None = None):
    """Every ``librosa.load`` inside stops at *max_seconds*; *info* is what audio_probe found in
    the job's input *path* (its rate and channels spare ffmpeg's decode a second probe); *decoded*:
    its samples, decoded ahead by the pipeline's fetch stage (decoded_input.py)."""
    import librosa

    if not isinstance(librosa.load, _ThreadsLoad):
        librosa.load = _ThreadsLoad(librosa.load)
    real = librosa.load.real
    previous = getattr(_job, "load", None)
    _job.load = _Load(real, max_seconds, {os.path.realpath(path): info}, info.seconds,
                      {os.path.realpath(path): decoded} if decoded else {})
    try:
        yield
    finally:
        _job.load = previous


_job = threading.local()  # the bounded load of the job this thread runs


class _ThreadsLoad:
    """``librosa.load`` as the job of the calling thread bounds it, or librosa's own outside any job:
    the engine child may run two jobs at once (device_gate.py), each with its own input and bound."""

    def __init__(self, real):
        self.real = real

    def __call__(self, path, **options):
        return (getattr(_job, "load", None) or self.real)(path, **options)


class _Load:
    """``librosa.load`` with the same signature, bounded."""

    def __init__(self, real, max_seconds: float, probed: dict, declared: float | None, decoded: dict):
        self.real, self.max_seconds, self.probed, self.declared = real, max_seconds, probed, declared
        self.decoded = decoded  # input's real path -> its samples decoded ahead
        self.signature = inspect.signature(real)

    def __call__(self, path, **options):
        args = self.signature.bind(path, **options)
        args.apply_defaults()
        a = args.arguments
        wanted = bound(self.max_seconds)
        a["duration"] = wanted if a["duration"] is None else min(a["duration"], wanted)
        if isinstance(path, (str, os.PathLike)) and np.dtype(a["dtype"]) == np.float32 and \
                (decoded := self.decoded.get(os.path.realpath(path))) is not None:
            return self._decoded_load(os.path.realpath(path), decoded, a)
        if isinstance(path, (str, os.PathLike)):
            a["path"] = _open_with_libsndfile(path)
        if a["path"] is None:
            return self._ffmpeg_load(os.fspath(path), a)
        y, sr = self.real(*args.args, **args.kwargs)
        self._check(y, sr)
        return y, sr

    def _check(self, y: np.ndarray, rate: int) -> None:
        if y.shape[-1] > (self.max_seconds + PADDING_S) * rate:
            raise audio_probe.Unusable(audio_probe.too_long(self.max_seconds, self.declared))

    def _decoded_load(self, path: str, decoded: str, a: dict):
        """What librosa would have read with libsndfile, read from the samples decoded ahead (the
        same float32 samples: decoded_input.py)."""
        rate = self.probed[path].rate
        return self._finish(decoded_input.load(decoded, rate, a["offset"], a["duration"]), rate, a)

    def _finish(self, y: np.ndarray, rate: int, a: dict):
        """What ``librosa.load`` does after decoding: the limit checked first (a refusal costs no
        more than the decode), then the mono fold and the resampling it was asked for."""
        import librosa

        self._check(y, rate)
        if a["mono"]:
            y = librosa.to_mono(y)
        if a["sr"] is None:
            return y, rate
        return librosa.resample(y, orig_sr=rate, target_sr=a["sr"], res_type=a["res_type"]), a["sr"]

    def _ffmpeg_load(self, path: str, a: dict):
        info = self.probed.get(os.path.realpath(path)) or audio_probe.probe(path)
        y = decode(path, info.rate, info.channels, a["offset"], a["duration"]).astype(a["dtype"], copy=False)
        return self._finish(y, info.rate, a)


def _open_with_libsndfile(path):
    """An open SoundFile (librosa reads no further from it than asked), or None if libsndfile
    does not know the format or the length (reading past the end of a FLAC stream of unknown
    length fails in libsndfile's seek; ffmpeg decodes it)."""
    import soundfile

    try:
        f = soundfile.SoundFile(path)
    except soundfile.SoundFileRuntimeError:
        return None
    if f.frames >= audio_probe.UNKNOWN_FRAMES:
        f.close()
        return None
    return f


def ffmpeg_pcm(path: str, rate: int, channels: int, offset: float = 0.0, seconds: float | None = None) -> list[str]:
    """ffmpeg decoding *path*'s first audio stream to interleaved float32 on its stdout."""
    return (["ffmpeg", "-nostdin", "-v", "error"] + (["-ss", f"{offset:.6f}"] if offset else []) + ["-i", path]
            + ["-map", "0:a:0"] + (["-t", f"{seconds:.6f}"] if seconds is not None else [])
            + ["-ac", str(channels), "-ar", str(rate), "-f", "f32le", "-c:a", "pcm_f32le", "pipe:1"])


def decode(path: str, rate: int, channels: int, offset: float, seconds: float) -> np.ndarray:
    """Up to *seconds* of *path*'s first audio stream from *offset*, as librosa lays it out:
    (channels, frames) float32, or (frames,) for mono.  Nothing past *seconds* is held."""
    out = np.empty((int(np.ceil(seconds * rate)), channels), dtype=np.float32)
    command = ffmpeg_pcm(path, rate, channels, offset, seconds)
    view = memoryview(out).cast("B")
    got = 0
    # Ends with the engine: a job killed mid-decode (job_timeout, a stop) leaves no decoder running.
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, preexec_fn=parent_death.preexec())
    try:
        while got < len(view):
            n = proc.stdout.readinto(view[got:])
            if not n:
                break
            got += n
    finally:
        full = got == len(view)
        if full:
            proc.kill()  # whatever ffmpeg has left is past the bound
        proc.stdout.close()
        code = proc.wait()
    if code != 0 and not full:
        raise audio_probe.Unusable(audio_probe.NOT_AUDIO)
    out = out[: got // (4 * channels)]
    return out[:, 0] if channels == 1 else out.T
