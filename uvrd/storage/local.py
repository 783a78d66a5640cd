"""The local backend: the spool and output directories of one host, as uvrd always had them."""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import links, retention, spool
from ..messages import Task
from . import Storage


class LocalStorage(Storage):
    name = "local"

    def put_input(self, spooled: Path, name: str) -> str:
        return str(spooled)

    def discard_input(self, ref: str) -> None:
        Path(ref).unlink(missing_ok=True)

    def fetch_input(self, task: Task) -> Path:
        return spool.resolve_input(self.config.processor.spool_dir, task.audio_path, task.task_uuid, task.hook_url)

    def remove_input(self, task: Task) -> None:
        spool.remove_input(self.config.processor.spool_dir, task.audio_path, task.task_uuid)

    def put_stems(self, task_uuid: str, stems: dict[str, str]) -> dict[str, str]:
        """Move the job's work directory to output_dir/<task_uuid>/ (replacing an earlier run's)."""
        final = self.config.processor.output_dir / task_uuid
        workdir = Path(next(iter(stems.values()))).parent
        if final.exists():
            shutil.rmtree(final)
        workdir.rename(final)
        return {name: str(final / Path(path).name) for name, path in stems.items()}

    def link(self, task_uuid: str, stem: str, ref: str) -> str:
        api = self.config.api
        return links.stem_url(api.public_url, api.link_secret, task_uuid, stem, api.link_ttl)

    def sweep(self, now: float | None = None) -> int:
        return sweep_local(self.config, now)


def sweep_local(config, now: float | None = None) -> int:
    """Stems and killed jobs' work directories in output_dir, attempt records, spool orphans."""
    p, u = config.processor, config.uploader
    removed = retention.sweep([p.output_dir, p.output_dir / ".attempts"], u.retention, now=now,
                              keep=frozenset({".attempts"}))
    return removed + retention.sweep([p.spool_dir], u.spool_retention, now=now)
