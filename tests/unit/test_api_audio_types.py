"""Magic-byte sniffing, on files ffmpeg really wrote in every format we take."""

from __future__ import annotations

import random
import subprocess

import pytest

from uvrd.api.audio_types import HEAD_BYTES, sniff
from devtools import tinymodel

# (ffmpeg arguments, file name, what sniff must say)
ENCODINGS = [
    ([], "a.wav", "wav"),
    (["-c:a", "flac"], "a.flac", "flac"),
    (["-c:a", "libmp3lame"], "a.mp3", "mp3"),
    (["-c:a", "libmp3lame", "-write_xing", "0", "-id3v2_version", "0"], "bare.mp3", "mp3"),
    (["-c:a", "libvorbis"], "a.ogg", "ogg"),
    (["-c:a", "libopus"], "a.opus", "ogg"),
    (["-c:a", "aac"], "a.m4a", "m4a"),
    (["-c:a", "aac"], "a.mp4", "m4a"),
    (["-c:a", "pcm_s16be"], "a.aiff", "aiff"),
    (["-c:a", "flac"], "a.mka", "mka"),
    (["-c:a", "libopus"], "a.webm", "mka"),
]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return tinymodel.write_sample(tmp_path_factory.mktemp("sniff") / "source.wav", seconds=0.3)


@pytest.mark.parametrize("args, name, expected", ENCODINGS, ids=[e[1] for e in ENCODINGS])
def test_real_files_of_every_format_are_recognised(source, tmp_path, args, name, expected):
    target = tmp_path / name
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), *args, str(target)],
                   check=True, timeout=60)
    with open(target, "rb") as f:
        assert sniff(f.read(HEAD_BYTES)) == expected


@pytest.mark.parametrize("head", [
    b"", b"RIFF", b"RIFF\x00\x00\x00\x00AVI LIST", b"%PDF-1.7\n", b"<html><body>", b"PK\x03\x04zipzipzip",
    b"\x89PNG\r\n\x1a\n\x00\x00", b"\xff\xd8\xff\xe0\x00\x10JFIF",  # JPEG: 0xFF then not a frame sync
    b"\xff\xf1\x50\x80",  # ADTS AAC: layer bits 00
    b"\xff\xfb\xf0\x00",  # MPEG sync with the reserved bitrate 1111
    b"\xff\xfb\x9c\x00",  # MPEG sync with the reserved sample rate 11
    b"\xff\xeb\x90\x00",  # MPEG sync with the reserved version 01
    b"FORM\x00\x00\x00\x00ILBM", b"ftyp", b"\x00\x00\x00\x18ftpy",
])
def test_other_content_is_not_audio(head):
    assert sniff(head) is None


def test_random_bytes_are_rarely_taken_for_audio():
    rng = random.Random(0)  # seeded: the same 100 000 heads every run
    hits = sum(sniff(rng.randbytes(HEAD_BYTES)) is not None for _ in range(100_000))
    # The 11-bit MPEG sync alone lets about 1 in 2048 through (47 here); the reserved-value checks cut that.
    assert hits <= 25
