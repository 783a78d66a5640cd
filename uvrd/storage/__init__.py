"""Where inputs and stems live: this host's directories, or an S3-compatible bucket.

``storage.backend`` picks one for the whole deployment.  Every daemon talks to
it through :class:`Storage`; a message's ``storage`` field says which backend
its references (paths or object keys) belong to, and a daemon refuses a
reference of a backend it is not configured for.
"""

from __future__ import annotations

from pathlib import Path

from uvrd.config import Config
from uvrd.messages import Task
from uvrd.storage.retention import Judge


class StorageError(Exception):
    """The store did not do what was asked: unreachable, refused, or broke off half-way."""


class Storage:
    """What api, processor, uploader and retention need from a store.

    A *ref* is what a message carries: a path on this host for "local", an object key for "s3".
    """

    name = "base"

    def __init__(self, config: Config):
        self.config = config

    # -- api -----------------------------------------------------------------
    def put_input(self, spooled: Path, name: str) -> str:
        """Take a checked, complete input from the spool; return the ref a task names it by."""
        raise NotImplementedError

    def discard_input(self, ref: str) -> None:
        """Drop an input whose task was never queued."""
        raise NotImplementedError

    # -- processor -----------------------------------------------------------
    def fetch_input(self, task: Task) -> Path:
        """A local file holding the task's input.  BadMessage for the task's fault (missing,
        empty, outside the store), StorageError for the store's."""
        raise NotImplementedError

    def release_input(self, path: Path) -> None:
        """Forget the local file :meth:`fetch_input` gave (not the input itself)."""

    def remove_input(self, task: Task) -> None:
        """Delete a task's input once the task is final, if it is the task's own: the api names
        each input after its task (``<task_uuid>.<ext>``).  A task may name another's input (a
        duplicated or forged record); that one stays, and retention removes what no task claims."""
        raise NotImplementedError

    def put_stems(self, task_uuid: str, stems: dict[str, str]) -> dict[str, str]:
        """Store a finished job's stem files (all in one work directory); return their refs.

        Either every stem is stored or StorageError is raised: a partial set never becomes a result.
        The files are the caller's to remove afterwards, so that a failed store can be tried again.
        """
        raise NotImplementedError

    # -- uploader, api -------------------------------------------------------
    def ref_problem(self, ref: str) -> str | None:
        """Why a stem ref read from a message is not one this store hands out, or None."""
        return None

    def link(self, task_uuid: str, stem: str, ref: str, ttl: float | None = None) -> str:
        """A time-limited URL that downloads the stem without a token; valid for the configured
        time, or *ttl* seconds if that is shorter."""
        raise NotImplementedError

    # -- retention -----------------------------------------------------------
    def sweep(self, now: float | None = None, judge: Judge | None = None) -> int:
        """Delete what outlived its retention; return how many entries went.  *judge* says what
        becomes of the files named after a task (retention.verdict); without it, age alone decides."""
        raise NotImplementedError

    def delete_task_files(self, task_uuid: str) -> int:
        """Delete a task's input and stems wherever this store keeps them, now; return how many
        entries went (none is no error).  StorageError if the store failed: the sweep tries again."""
        raise NotImplementedError

    def close(self) -> None:
        pass


def open_storage(config: Config) -> Storage:
    if config.storage.backend == "s3":
        from uvrd.storage.s3 import S3Storage

        return S3Storage(config)
    from uvrd.storage.local import LocalStorage

    return LocalStorage(config)
