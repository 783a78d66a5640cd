"""Make a model file known to audio-separator offline.

audio-separator finds a model's file through ``download_checks.json`` and, for
MDX and VR models, its parameters by a hash of the file in
``mdx_model_data.json`` / ``vr_model_data.json``; all three live in the model
directory, and when present they are read instead of downloaded.  MDXC and
Roformer models carry their parameters in a YAML file named in the same entry;
Demucs v4 models are named by their YAML.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

# audio-separator hashes only the last 10,240,000 bytes of a file at least that large.
HASHED_TAIL_BYTES = 10000 * 1024

DOWNLOAD_LISTS = ("vr_download_list", "mdx_download_list", "mdx_download_vip_list", "demucs_download_list",
                  "mdx23c_download_list", "mdx23c_download_vip_list", "roformer_download_list")
DATA_FILES = {"mdx": "mdx_model_data.json", "vr": "vr_model_data.json"}


def model_hash(path: Path) -> str:
    """The MD5 audio-separator computes to look a model's parameters up."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - HASHED_TAIL_BYTES) if size >= HASHED_TAIL_BYTES else 0)
        return hashlib.md5(f.read()).hexdigest()


def place(source: Path, path: Path) -> None:
    """Put a model file from the asset cache at *path*: a hard link where they share a file system
    (real models are tens of MB), else a copy; atomic either way, so a reinstall over a model in use
    never shows a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, path)


def _update(path: Path, default, change) -> None:
    data = json.loads(path.read_text()) if path.exists() else default
    change(data)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _ensure_data_files(model_dir: Path) -> None:
    for name in DATA_FILES.values():
        if not (model_dir / name).exists():
            (model_dir / name).write_text("{}")


def list_model(model_dir: Path, download_list: str, friendly_name: str, entry) -> None:
    """Add *entry* (a file name, or for MDXC/Roformer/Demucs a dict of files) to ``download_checks.json``."""
    assert download_list in DOWNLOAD_LISTS, download_list
    model_dir.mkdir(parents=True, exist_ok=True)
    _ensure_data_files(model_dir)
    _update(model_dir / "download_checks.json", {k: {} for k in DOWNLOAD_LISTS},
            lambda checks: checks.setdefault(download_list, {}).__setitem__(friendly_name, entry))


def describe_by_hash(model_dir: Path, arch: str, model_file: Path, parameters: dict) -> str:
    """Record an MDX or VR model's parameters under its hash; return the hash."""
    digest = model_hash(model_file)
    _ensure_data_files(model_dir)
    _update(model_dir / DATA_FILES[arch], {}, lambda data: data.__setitem__(digest, parameters))
    return digest


@dataclass(frozen=True)
class InstalledModel:
    """A model made ready in a model directory, and what uvrd needs to know to run it."""

    filename: str  # what `processor.model` (or a task's `model`) names
    architecture: str  # "MDX", "VR", "MDXC" or "Demucs", as audio-separator says
    stems: tuple[str, ...]  # the stem names uvrd's results carry, lower-case, in the model's order
    processor_settings: tuple[tuple[str, object], ...] = ()  # further [processor] keys it needs, e.g. mdx_hop_length

    def toml(self, model_dir: Path) -> str:
        """The [processor] lines that select this model."""
        lines = [f"model = {json.dumps(self.filename)}", f"model_dir = {json.dumps(str(model_dir))}"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in self.processor_settings]
        return "\n".join(lines) + "\n"
