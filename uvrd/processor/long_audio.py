"""Long inputs separated in chunks: the engine's memory is bounded whatever the length, and the
seams are crossfaded.

audio-separator loads its whole input and its working arrays grow with it (the tiny test model
took 2.5 GB for 600 s of stereo; two hours would take about 25 GB).  Its own ``chunk_duration``
cuts the file and concatenates the pieces' stems end to end: each seam is a hard cut between two
separations that saw different context.  Here:

1. :func:`survey` decodes the input once, streaming, for its true length and peak: the length
   limit applies to what the file holds (a header can lie), and the input normalisation that
   audio-separator's MDX and MDXC apply to a whole file is applied alike to every chunk.
2. :func:`chunks` streams the input through one ffmpeg at the model's rate, in stereo, and writes
   each ``seconds + overlap`` of it as a float WAV for the loaded model to separate.
3. :class:`Stitcher` crossfades each stem's chunks over the overlap (raised cosine: the two gains
   sum to 1, right for two estimates of one signal) and appends them to a lossless file: one
   overlap per stem is all it holds.
4. :meth:`Stitcher.finish` encodes each stem once, with the output normalisation that
   audio-separator applies to a whole stem worked out from the whole stem's peak.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from uvrd.processor import audio_probe, bounded_decode, ffmpeg, job_options
from uvrd.runtime import parent_death

CHANNELS = 2  # every model separates stereo; ffmpeg folds surround down and widens mono
FRAME_BYTES = 4 * CHANNELS  # float32
# The stitched stems are kept as 24-bit FLAC at this gain: a separated stem may peak over full scale
# before its normalisation, and 21 bits are left, far finer than the 16-bit stems audio-separator
# writes.
HEADROOM = 1 / 8
# What audio-separator's pydub export passes ffmpeg for each format (common_separator.write_audio_pydub).
_CONTAINER = {"m4a": "mp4", "mka": "matroska"}


@dataclass(frozen=True)
class Chunking:
    """processor.chunk_seconds and processor.chunk_overlap_seconds."""
    seconds: float
    overlap: float

    def needed(self, seconds: float | None) -> bool:
        """Whether audio this long (None: not known) is separated in chunks."""
        return seconds is None or seconds > self.seconds + self.overlap

    def frames(self, rate: int) -> tuple[int, int]:
        """(hop, overlap) in frames at *rate*."""
        return round(self.seconds * rate), round(self.overlap * rate)

    def count(self, frames: int, rate: int) -> int:
        hop, overlap = self.frames(rate)
        return 1 + max(0, math.ceil((frames - hop - overlap) / hop))


@dataclass(frozen=True)
class Survey:
    frames: int
    peak: float
    rate: int

    @property
    def seconds(self) -> float:
        return self.frames / self.rate


@dataclass(frozen=True)
class Chunk:
    index: int
    path: str
    frames: int
    last: bool


def survey(path: str, rate: int, max_seconds: float, declared: float | None) -> Survey:
    """The input's length and peak at *rate*, decoded whole but never held; audio past
    *max_seconds* is refused as soon as the decode reaches it."""
    limit = (max_seconds + bounded_decode.PADDING_S) * rate
    block = np.empty((rate, CHANNELS), dtype=np.float32)
    frames, peak = 0, 0.0
    with _Decoder(path, rate) as decoder:
        while n := decoder.fill(block):
            frames += n
            peak = max(peak, float(np.abs(block[:n]).max()))
            if frames > limit:
                raise audio_probe.Unusable(audio_probe.too_long(max_seconds, declared))
    if frames == 0:
        raise audio_probe.Unusable("audio file holds no audio (0 samples): there is nothing to separate")
    if not math.isfinite(peak):
        raise audio_probe.Unusable("audio holds samples that are not numbers (NaN or infinite)")
    return Survey(frames, peak, rate)


def chunks(path: str, rate: int, plan: Chunking, directory: str, gain: float = 1.0) -> Iterator[Chunk]:
    """The input in overlapping pieces, each a float WAV in *directory* (removed when the next is
    made), its samples times *gain*.  Piece k holds frames [k*hop, k*hop + hop + overlap)."""
    import soundfile

    hop, overlap = plan.frames(rate)
    size = hop + overlap
    window = np.empty((size, CHANNELS), dtype=np.float32)
    ahead = np.empty((rate, CHANNELS), dtype=np.float32)  # a look past the window: is there more?
    target = os.path.join(directory, "chunk.wav")
    with _Decoder(path, rate) as decoder:
        filled, index = 0, 0
        while True:
            filled += decoder.fill(window[filled:])
            more = decoder.fill(ahead) if filled == size else 0
            soundfile.write(target, window[:filled] * gain if gain != 1.0 else window[:filled], rate, subtype="FLOAT")
            yield Chunk(index, target, filled, last=more == 0)
            if more == 0:
                return
            window[:overlap] = window[hop:size]
            window[overlap:overlap + more] = ahead[:more]
            filled, index = overlap + more, index + 1


@contextlib.contextmanager
def peak_of_whole(instance, architecture: str, peak: float):
    """audio-separator's MDX scales its primary stem by the peak of the input it was given
    (``source = self.demix(mix) * peak`` in ``MDXSeparator.separate``): a chunk's own peak would
    give each chunk another level.  For the duration, MDX's stems are scaled by the whole input's
    *peak* instead.  Other architectures do not do this."""
    if architecture != "MDX":
        yield
        return
    demix = instance.demix

    def demix_at_whole_peak(mix, is_match_mix=False):
        source = demix(mix, is_match_mix=is_match_mix)
        local = float(np.abs(mix).max())
        return source if is_match_mix or local == 0 else source * (peak / local)

    instance.demix = demix_at_whole_peak
    try:
        yield
    finally:
        del instance.demix  # the class's own method again


def input_gain(peak: float, normalization: float | None, amplification: float | None) -> float:
    """What audio-separator's ``spec_utils.normalize`` multiplies a whole input of this peak by."""
    if normalization is not None and peak > normalization:
        return normalization / peak
    if amplification is not None and 0 < peak < amplification:
        return amplification / peak
    return 1.0


class Stitcher:
    """Each stem's chunks, crossfaded and appended to ``<stem>.stitching.flac`` in *directory*."""

    def __init__(self, directory: str, rate: int, overlap: int):
        self.directory, self.rate, self.overlap = directory, rate, overlap
        self._files: dict = {}
        self._tails: dict[str, np.ndarray] = {}
        self.peaks: dict[str, float] = {}

    def add(self, chunk: Chunk, stems: dict[str, str]) -> None:
        """*stems*: the files the model wrote for *chunk*, read and removed here."""
        import soundfile

        arrays = {}
        for stem, path in stems.items():
            arrays[stem], rate = soundfile.read(path, dtype="float32", always_2d=True)
            os.unlink(path)
            if rate != self.rate:
                raise RuntimeError(f"the model wrote {stem} at {rate} Hz from a chunk at {self.rate} Hz")
        self.add_audio(chunk, arrays)

    def add_audio(self, chunk: Chunk, stems: dict[str, np.ndarray]) -> None:
        """*stems*: each stem of *chunk*, (frames, channels) float32."""
        if self._files and set(stems) != set(self._files):
            raise RuntimeError(f"chunk {chunk.index + 1} gave the stems {sorted(stems)}, the first {sorted(self._files)}")
        for stem, audio in stems.items():
            audio = _fit(audio, chunk.frames)
            tail = self._tails.pop(stem, None)
            if tail is not None:
                fade = crossfade_in(len(tail))[:, None]
                audio[:len(tail)] = tail * (1 - fade) + audio[:len(tail)] * fade
            keep = 0 if chunk.last else min(self.overlap, len(audio))
            self._write(stem, audio[:len(audio) - keep])
            if keep:
                self._tails[stem] = audio[len(audio) - keep:].copy()

    def _write(self, stem: str, audio: np.ndarray) -> None:
        import soundfile

        if stem not in self._files:
            self._files[stem] = soundfile.SoundFile(self._stitching(stem), "w", self.rate, CHANNELS, "PCM_24", format="FLAC")
            self.peaks[stem] = 0.0
        if len(audio):
            self.peaks[stem] = max(self.peaks[stem], float(np.abs(audio).max()))
            self._files[stem].write(np.clip(audio * HEADROOM, -1.0, 1.0))

    def _stitching(self, stem: str) -> str:
        return os.path.join(self.directory, f"{stem}.stitching.flac")

    def finish(self, output_dir: str, output_format: str, bit_depth: int, normalization: float | None,
               amplification: float | None) -> dict[str, str]:
        """Each stem encoded as ``<output_dir>/<stem>.<output_format>``, normalised from its whole peak
        as audio-separator normalises a stem, at the bit depth it would write."""
        self.close()
        out = {}
        for stem, peak in self.peaks.items():
            gain = input_gain(peak, normalization, amplification) / HEADROOM
            target = os.path.join(output_dir, f"{stem}.{output_format}")
            _encode(self._stitching(stem), target, output_format, bit_depth, gain)
            os.unlink(self._stitching(stem))
            out[stem] = target
        return out

    def close(self) -> None:
        for f in self._files.values():
            f.close()


def crossfade_in(n: int) -> np.ndarray:
    """The incoming chunk's gain over an overlap of *n* frames, 0 to 1; the outgoing one's is 1 minus it."""
    return (np.sin(np.linspace(0.0, np.pi / 2, n, dtype=np.float64)) ** 2).astype(np.float32)


def output_bit_depth(path: str) -> int:
    """The bit depth audio-separator writes a whole input's stems at (common_separator.prepare_mix)."""
    import soundfile

    try:
        subtype = soundfile.info(path).subtype
    except Exception:
        return 16
    if "PCM_24" in subtype:
        return 24
    if "PCM_32" in subtype or "FLOAT" in subtype or "DOUBLE" in subtype:
        return 32
    return 16


def _fit(audio: np.ndarray, frames: int) -> np.ndarray:
    """The model's output cut or padded to its chunk's length (VR's may differ by a few frames)."""
    if audio.shape[1] == 1:
        audio = np.repeat(audio, CHANNELS, axis=1)
    if len(audio) >= frames:
        return np.array(audio[:frames])
    return np.concatenate([audio, np.zeros((frames - len(audio), audio.shape[1]), dtype=audio.dtype)])


def _encode(source: str, target: str, output_format: str, bit_depth: int, gain: float) -> None:
    args = ["-i", source, "-af", f"volume={gain!r}:precision=double", *job_options.depth_args(output_format, bit_depth)]
    if output_format == "mp3":
        args += ["-b:a", "320k"]
    why = ffmpeg.write([*args, "-f", _CONTAINER.get(output_format, output_format)], target)
    if why is not None:
        raise RuntimeError(f"could not encode a stitched stem as {output_format}: {why}")


class _Decoder:
    """One ffmpeg decoding the input's first audio stream to float32 stereo at *rate*, read in
    place into the caller's arrays; killed when the block ends, however it ends."""

    def __init__(self, path: str, rate: int):
        self.command = bounded_decode.ffmpeg_pcm(path, rate, CHANNELS)
        self.proc: subprocess.Popen | None = None
        self.got = 0

    def __enter__(self) -> _Decoder:
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, preexec_fn=parent_death.preexec())
        return self

    def fill(self, out: np.ndarray) -> int:
        """Frames read into *out* (C-contiguous, float32, stereo): as many as fit, fewer only at the end."""
        view = memoryview(out).cast("B")
        got = 0
        while got < len(view):
            n = self.proc.stdout.readinto(view[got:])
            if not n:
                break
            got += n
        self.got += got
        return got // FRAME_BYTES

    def __exit__(self, kind, error, trace) -> None:
        self.proc.kill()
        self.proc.stdout.close()
        code = self.proc.wait()
        if kind is None and code not in (0, -9) and self.got == 0:
            raise audio_probe.Unusable(audio_probe.NOT_AUDIO)
