"""Fetching a finished task's stems to local files, for ``uvrd submit --output``.

A stem is written under a temporary name beside its final one and renamed
only once every byte the server announced has arrived, so a file with the
final name is always whole.  On a terminal a progress bar shows each stem.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit

import requests

from uvrd.peers import numbers as peer_numbers

CHUNK_BYTES = 256 * 1024
TIMEOUT_S = 60
_FILENAME = re.compile(r'filename="?([^";]+)"?')
_SAFE_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


class DownloadError(Exception):
    """A stem did not arrive whole; the message says which and why."""


def download(url: str, directory: Path, source: Path, stem: str, headers: dict | None = None,
             progress_to: IO[str] | None = None) -> Path:
    """Stream *stem*'s *url* into *directory* (named by :func:`file_name`); return the file.
    DownloadError if it does not arrive whole: then no file of that name is written."""
    label = stem
    try:
        response = requests.get(url, headers=headers or {}, stream=True, timeout=TIMEOUT_S)
    except requests.RequestException as e:
        raise DownloadError(f"{label}: could not connect ({type(e).__name__})") from None
    with response:
        if response.status_code != 200:
            raise DownloadError(f"{label}: the server answered HTTP {response.status_code}")
        expected = None if response.headers.get("Content-Encoding") else \
            peer_numbers.decimal(response.headers.get("Content-Length"))
        target = directory / file_name(source, stem, response.url, response.headers.get("Content-Disposition"))
        bar = Progress(label, expected, progress_to)
        fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        received = 0
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    for chunk in response.iter_content(CHUNK_BYTES):
                        f.write(chunk)
                        received += len(chunk)
                        bar.update(received)
                except requests.RequestException as e:
                    raise DownloadError(f"{label}: the transfer broke off after {received} bytes "
                                        f"({type(e).__name__})") from None
            if expected is not None and received != expected:
                raise DownloadError(f"{label}: got {received} of the {expected} bytes the server announced")
            os.replace(part, target)
        except BaseException:
            Path(part).unlink(missing_ok=True)
            raise
        finally:
            bar.done(received)
    return target


def file_name(source: Path, stem: str, url: str, content_disposition: str | None = None) -> str:
    """``<source's name>_<stem><extension of the served file>``: song.flac's vocals -> song_vocals.flac."""
    match = _FILENAME.search(content_disposition or "")
    served = match.group(1) if match else unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    suffix = Path(served).suffix
    suffix = suffix if _SAFE_SUFFIX.fullmatch(suffix) else ""
    safe_stem = re.sub(r"[^A-Za-z0-9._-]", "_", stem)[:64] or "stem"
    return f"{source.stem}_{safe_stem}{suffix}"


class Progress:
    """A one-line bar on *stream* when it is a terminal; nothing otherwise."""

    def __init__(self, label: str, total: int | None, stream: IO[str] | None):
        stream = sys.stderr if stream is None else stream
        self.stream = stream if stream.isatty() else None
        self.label, self.total = label, total
        self._shown = 0.0

    def update(self, received: int, force: bool = False) -> None:
        if self.stream is None:
            return
        now = time.monotonic()
        if not force and now - self._shown < 0.1:
            return
        self._shown = now
        if self.total:
            share = min(received / self.total, 1.0)
            bar = "#" * int(share * 30)
            line = f"{self.label:<24} [{bar:<30}] {share:4.0%} {_mb(received)}/{_mb(self.total)}"
        else:
            line = f"{self.label:<24} {_mb(received)}"
        self.stream.write("\r" + line)
        self.stream.flush()

    def done(self, received: int) -> None:
        if self.stream is not None:
            self.update(received, force=True)
            self.stream.write("\n")
            self.stream.flush()


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
