"""What kind of audio a file holds, from its first bytes.

The API refuses anything that is not recognisably audio before it queues a
task, so a client learns at once (415) instead of through a failed webhook.
The extension it returns names the spool file; ffmpeg probes the content
anyway, so it only has to be plausible.
"""

from __future__ import annotations

# Enough for every signature below (AIFF's form type ends at byte 12).
HEAD_BYTES = 16

DESCRIPTION = "WAV, FLAC, MP3, Ogg, MP4/M4A, AIFF or Matroska/WebM"


def sniff(head: bytes) -> str | None:
    """The file extension for *head*'s format, or None when it is not audio we take."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3" or _mpeg_frame(head):
        return "mp3"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "m4a"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mka"
    return None


def _mpeg_frame(head: bytes) -> bool:
    """An MPEG audio frame header: 11 sync bits and no reserved field values.

    The sync alone matches one random file in 2048; the reserved-value checks
    (version, layer, bitrate, sample rate) turn away most such chance hits.
    """
    if len(head) < 3 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version = (head[1] >> 3) & 0b11
    layer = (head[1] >> 1) & 0b11
    bitrate = head[2] >> 4
    sample_rate = (head[2] >> 2) & 0b11
    return version != 0b01 and layer != 0b00 and bitrate != 0b1111 and sample_rate != 0b11
