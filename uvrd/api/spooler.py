"""Incoming audio into the spool, under a name the server chooses.

Uploads and fetched URLs stream straight into a hidden temporary file in the
spool directory (no second copy through /tmp).  Only once the bytes are
known to be audio, within the limit and on disk does the file get its final
name, ``<task_uuid>.<ext>``, by a hard link: atomic, never over an existing
file, and the temporary name goes away when it is closed whatever happens.
So the processor never sees a partial file, and a client never picks a path.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import urllib3

from uvrd.peers import safehttp
from uvrd.api.audio_types import DESCRIPTION, HEAD_BYTES, sniff
from uvrd.api.errors import ApiError
from uvrd.runtime.deadline import Deadline

INCOMING_PREFIX = ".incoming-"
# Group-readable: the processor may run as another user of the service's group.
FILE_MODE = 0o640


class Spool:
    def __init__(self, directory: Path, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = max_bytes

    def prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def incoming(self) -> IO[bytes]:
        """A temporary file in the spool, deleted when closed unless :meth:`keep` linked it."""
        return tempfile.NamedTemporaryFile(dir=self.directory, prefix=INCOMING_PREFIX, suffix=".part")

    def keep(self, tmp: IO[bytes], task_uuid: str) -> Path:
        """Check *tmp* is audio within the limit, then give it its final name."""
        return self.link(tmp, task_uuid, self.check(tmp))

    def check(self, tmp: IO[bytes]) -> str:
        """The extension of *tmp*'s audio format; ApiError if it is empty, over the limit or not audio.

        Apart from :meth:`link` so that a batch checks every file before it names any."""
        tmp.flush()
        size = os.fstat(tmp.fileno()).st_size
        if size == 0:
            raise ApiError(400, "the audio is empty")
        if size > self.max_bytes:
            raise ApiError(413, f"the audio is over the {self.max_bytes}-byte upload limit")
        tmp.seek(0)
        extension = sniff(tmp.read(HEAD_BYTES))
        if extension is None:
            raise ApiError(415, f"the audio is not in a recognised format ({DESCRIPTION})")
        return extension

    def link(self, tmp: IO[bytes], task_uuid: str, extension: str) -> Path:
        """Give a checked *tmp* its final name, ``<task_uuid>.<extension>``."""
        os.fchmod(tmp.fileno(), FILE_MODE)
        # On disk before the task that names it is in Kafka: a crash must not leave a task without its file.
        os.fsync(tmp.fileno())
        final = self.directory / f"{task_uuid}.{extension}"
        os.link(tmp.name, final)
        return final

    def fetch(self, url: str, task_uuid: str, allow_private: bool, timeout: float) -> Path:
        """Download *url* into the spool; *timeout* bounds the whole download, not each read."""
        with self.fetched(url, allow_private, timeout) as (tmp, extension):
            return self.link(tmp, task_uuid, extension)

    @contextmanager
    def fetched(self, url: str, allow_private: bool, timeout: float) -> Iterator[tuple[IO[bytes], str]]:
        """*url* downloaded and checked into a temporary file of the spool, with its audio's
        extension, for the block to :meth:`link` (or not: the file goes when the block ends)."""
        with self.incoming() as tmp:
            try:
                response = safehttp.request("GET", url, allow_private=allow_private, deadline=Deadline.after(timeout),
                                            max_bytes=self.max_bytes, sink=tmp)
            except ValueError as e:  # UnsafeURL, or a URL the HTTP client cannot send
                raise ApiError(400, f"the audio URL is refused: {e}") from None
            except safehttp.TooLarge:
                raise ApiError(413, f"the audio at the URL is over the {self.max_bytes}-byte upload limit") from None
            except safehttp.DeadlineExceeded:
                # 504, not 502: the server at the URL answered too slowly rather than wrongly, and
                # the same URL may well work later (RFC 9110 15.6.5: an upstream's untimely answer).
                raise ApiError(504, f"fetching the audio URL took longer than this server allows "
                                    f"({timeout:g} s); nothing was queued") from None
            except (urllib3.exceptions.HTTPError, OSError) as e:
                raise ApiError(502, f"could not fetch the audio URL: {network_reason(e)}") from None
            if not 200 <= response.status < 300:
                raise ApiError(502, f"fetching the audio URL answered HTTP {response.status}")
            yield tmp, self.check(tmp)


def network_reason(e: Exception) -> str:
    """urllib3's messages name connection objects; keep the part a client can act on."""
    if isinstance(e, urllib3.exceptions.NewConnectionError):
        return "could not connect (" + str(e).rpartition(": ")[2] + ")"
    if isinstance(e, urllib3.exceptions.ConnectTimeoutError):
        return "connecting timed out"
    if isinstance(e, urllib3.exceptions.ReadTimeoutError):
        return "the server stopped sending (read timed out)"
    if isinstance(e, urllib3.exceptions.SSLError):
        return f"TLS failed ({e})"
    if isinstance(e, urllib3.exceptions.ProtocolError):
        return "the connection broke off"
    return str(e) or type(e).__name__
