"""Input files: a task may only name a file inside the spool directory.

The path is resolved with every symlink followed before the check, so neither
``../`` nor a link planted in the spool reaches outside it.  The engine gets
the resolved path, never the one from the message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .messages import BadMessage

# The extension of an input's name as the api gives it (uvrd/api/audio_types.py sniff).
EXTENSION = re.compile(r"[A-Za-z0-9]{1,8}")


def resolve_input(spool_dir: Path, audio_path: str, task_uuid: str, hook_url: str) -> Path:
    def bad(message: str) -> BadMessage:
        return BadMessage(message, task_uuid, hook_url)

    spool = Path(os.path.realpath(spool_dir))
    candidate = Path(audio_path)
    if not candidate.is_absolute():
        candidate = spool / candidate
    real = Path(os.path.realpath(candidate))
    if not real.is_relative_to(spool) or real == spool:
        raise bad(f"audio_path {audio_path!r} is outside the spool directory {spool_dir}")
    try:
        st = real.stat()
    except FileNotFoundError:
        raise bad(f"audio file {audio_path!r} does not exist") from None
    except OSError as e:
        raise bad(f"audio file {audio_path!r} cannot be read: {e.strerror}") from None
    if not real.is_file():
        raise bad(f"audio_path {audio_path!r} is not a regular file")
    if st.st_size == 0:
        raise bad(f"audio file {audio_path!r} is empty")
    try:
        with real.open("rb") as f:
            f.read(1)
    except OSError as e:
        raise bad(f"audio file {audio_path!r} cannot be read: {e.strerror}") from None
    return real


def owned_name(name: str, task_uuid: str) -> bool:
    """Whether *name* is what the api calls a task's input: ``<task_uuid>.<ext>``.

    A task may name any file in the spool, another task's included (a duplicated or forged
    record); only the one named after it is its own to delete.
    """
    stem, dot, extension = name.rpartition(".")
    return bool(dot) and stem == task_uuid and EXTENSION.fullmatch(extension) is not None


def remove_input(spool_dir: Path, audio_path: str, task_uuid: str) -> None:
    """Delete a task's input once the task is final: only the task's own file (spool_dir/
    ``<task_uuid>.<ext>``, links followed); anything else is left to retention."""
    spool = Path(os.path.realpath(spool_dir))
    candidate = Path(audio_path)
    if not candidate.is_absolute():
        candidate = spool / candidate
    real = Path(os.path.realpath(candidate))
    if real.parent == spool and owned_name(real.name, task_uuid) and real.is_file():
        real.unlink(missing_ok=True)
