"""The local backend: the spool and output directories of one host, as uvrd always had them.

Input files: a task may only name a file inside the spool directory.  The path is resolved with
every symlink followed before the check, so neither ``../`` nor a link planted in the spool reaches
outside it.  The engine gets the resolved path, never the one from the message.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from uvrd.storage import links, retention
from uvrd.messages import BadMessage, Task
from uvrd.storage import Storage


class LocalStorage(Storage):
    name = "local"

    def put_input(self, spooled: Path, name: str) -> str:
        return str(spooled)

    def discard_input(self, ref: str) -> None:
        Path(ref).unlink(missing_ok=True)

    def fetch_input(self, task: Task) -> Path:
        return resolve_input(self.config.processor.spool_dir, task.audio_path, task.task_uuid, task.hook_url)

    def remove_input(self, task: Task) -> None:
        remove_input(self.config.processor.spool_dir, task.audio_path, task.task_uuid)

    def put_stems(self, task_uuid: str, stems: dict[str, str]) -> dict[str, str]:
        """Move the job's work directory to output_dir/<task_uuid>/ (replacing an earlier run's)."""
        final = self.config.processor.output_dir / task_uuid
        workdir = Path(next(iter(stems.values()))).parent
        if final.exists():
            shutil.rmtree(final)
        workdir.rename(final)
        return {name: str(final / Path(path).name) for name, path in stems.items()}

    def link(self, task_uuid: str, stem: str, ref: str, ttl: float | None = None) -> str:
        api = self.config.api
        return links.stem_url(api.public_url, api.link_secret, task_uuid, stem,
                              api.link_ttl if ttl is None else min(api.link_ttl, ttl))

    def sweep(self, now: float | None = None, judge: retention.Judge | None = None) -> int:
        return sweep_local(self.config, now, judge)

    def delete_task_files(self, task_uuid: str) -> int:
        return delete_local_files(self.config, task_uuid)


def sweep_local(config, now: float | None = None, judge: retention.Judge | None = None) -> int:
    """Stems and killed jobs' work directories in output_dir, attempt records, spool files: a task's
    as its status says (*judge*), the others by age."""
    p = config.processor
    removed = retention.sweep([p.output_dir, p.output_dir / ".attempts"], config.api.result_retention, now=now,
                              keep=frozenset({".attempts"}), judge=judge)
    return removed + retention.sweep([p.spool_dir], config.uploader.spool_retention, now=now, judge=judge,
                                     task_of=retention.input_task)


def delete_local_files(config, task_uuid: str) -> int:
    """This host's files of a task: its stems directory (output_dir/<task_uuid>/) and its spool input
    (spool_dir/<task_uuid>.<ext>).  A name that is no task's deletes nothing."""
    if retention.stems_task(task_uuid) is None:
        return 0
    p = config.processor
    candidates = [p.output_dir / task_uuid]
    try:
        candidates += [Path(e.path) for e in os.scandir(p.spool_dir) if retention.input_task(e.name) == task_uuid]
    except FileNotFoundError:
        pass
    removed = 0
    for path in candidates:
        try:
            retention.remove(path)
            removed += 1
        except FileNotFoundError:
            continue
    return removed


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
