"""Audio files that lie about their length, or do not say it, built with ffmpeg (for the tests
of max_audio_seconds and bench/decode_bomb.py).

- :func:`lying_m4a`: an M4A (which the api accepts) whose headers (mvhd, tkhd, mdhd) claim a
  length other than the samples it holds; ffprobe reports the claim, ffmpeg decodes every sample.
- :func:`stream`: audio written to a pipe, so the muxer could not go back to write the length:
  Matroska without a Duration, FLAC whose STREAMINFO total is 0 (unknown).

And :func:`two_tones`, a long input made without holding it (the long-audio tests, bench section 12).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

SOURCES = {"noise": "anoisesrc=r={rate}:a=0.1:d={seconds}", "silence": "anullsrc=r={rate}:d={seconds}"}


def _ffmpeg(seconds: float, rate: int, channels: int, output: list[str], stdout=None, source: str = "noise") -> None:
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi",
                    "-i", SOURCES[source].format(rate=rate, seconds=seconds),
                    "-af", f"aformat=channel_layouts={layout}", *output], check=True, stdout=stdout)


def stream(path: Path, seconds: float, container: str = "matroska", rate: int = 16000, channels: int = 2) -> Path:
    """*seconds* of noise written the way a live stream is: through a pipe, with no length."""
    codec = {"matroska": "libopus", "flac": "flac"}[container]
    if codec == "libopus":
        rate = 48000 if rate not in (8000, 12000, 16000, 24000, 48000) else rate
    with open(path, "wb") as f:
        _ffmpeg(seconds, rate, channels, ["-c:a", codec, "-f", container, "pipe:1"], stdout=f)
    return path


def lying_m4a(path: Path, seconds: float, claims: float, rate: int = 16000, channels: int = 2,
              source: str = "noise") -> Path:
    """An AAC M4A holding *seconds* of noise (or silence) whose every duration field says *claims*."""
    _ffmpeg(seconds, rate, channels, ["-c:a", "aac", "-b:a", "64k", str(path)], source=source)
    path.write_bytes(claim(path.read_bytes(), claims))
    return path


def claim(m4a: bytes, claims: float) -> bytes:
    """*m4a* with its movie, track and media durations set to *claims* seconds."""
    data = bytearray(m4a)
    movie_scale = None
    for kind, body in _walk(data, 0, len(data)):
        if kind in (b"mvhd", b"mdhd"):
            version = data[body]
            scale_at = body + 4 + (16 if version == 1 else 8)
            scale = struct.unpack_from(">I", data, scale_at)[0]
            movie_scale = scale if kind == b"mvhd" else movie_scale
            _put_duration(data, scale_at + 4, version, round(claims * scale))
        elif kind == b"tkhd":
            version = data[body]
            # version/flags, creation and modification times, track ID, reserved, then duration
            _put_duration(data, body + 4 + (16 if version == 1 else 8) + 8, version, round(claims * movie_scale))
    return bytes(data)


def _put_duration(data: bytearray, at: int, version: int, value: int) -> None:
    struct.pack_into(">Q" if version == 1 else ">I", data, at, value)


_CONTAINERS = {b"moov", b"trak", b"mdia"}


def _walk(data: bytearray, start: int, end: int):
    """(kind, body offset) of every box under *start*..*end*, depth first through the containers
    that lead to the duration fields (mvhd comes before the tracks, as ffmpeg writes it)."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, at + 8)[0], 16
        elif size == 0:
            size = end - at
        yield kind, at + header
        if kind in _CONTAINERS:
            yield from _walk(data, at + header, at + size)
        at += size


def two_tones(path: Path, seconds: float, rate: int = 44100) -> Path:
    """A long stereo FLAC (220 Hz left, 331 Hz right) made by ffmpeg as it goes: the caller never holds
    it (14 MB for ten minutes)."""
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=f=220:d={seconds}:r={rate}",
                    "-f", "lavfi", "-i", f"sine=f=331:d={seconds}:r={rate}", "-filter_complex", "[0][1]amerge=inputs=2",
                    "-c:a", "flac", str(path)], check=True, timeout=600)
    return path
