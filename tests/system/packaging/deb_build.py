"""This tree's .deb, built by `make deb` into build/deb and rebuilt only when what it packages changed.

Run as a script (`make test` does, beside the unit and service tiers) to build the Debian root, the
package and its install (installed_layer.py) before the system tier asks for them; the fixtures then
find them done, or wait on the same locks for the build under way.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DEB_DIR = REPO / "build" / "deb"
# The prebuild's PID while it runs (`make test` starts it beside the first two tiers).
PREBUILD_PID = REPO / "build" / "prebuild.pid"
# What goes into the package: a change elsewhere (tests) does not rebuild it.
PACKAGED = ["uvrd", "packaging", "debian", "pyproject.toml", "README.md"]


class DebBuildFailed(RuntimeError):
    """`make deb` failed: its output's tail says why."""


def source_hash() -> str:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z", "--", *PACKAGED], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    digest = hashlib.sha256()
    for name in sorted(f for f in files if f):
        path = REPO / name.decode()
        digest.update(name + b"\0" + (path.read_bytes() if path.is_file() else b""))
    return digest.hexdigest()


def built_deb() -> Path:
    """The package of this tree: built once per change of the tree, by one process at a time."""
    DEB_DIR.parent.mkdir(exist_ok=True)
    with open(DEB_DIR.parent / "deb.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = DEB_DIR / ".source-hash"
        wanted = source_hash()
        debs = sorted(DEB_DIR.glob("uvrd_*_amd64.deb"))
        if not debs or not stamp.exists() or stamp.read_text() != wanted:
            build = subprocess.run(["make", "deb"], cwd=REPO, capture_output=True, text=True, timeout=3000)
            if build.returncode != 0:
                raise DebBuildFailed(build.stdout[-4000:] + build.stderr[-4000:])
            stamp.write_text(wanted)
            debs = sorted(DEB_DIR.glob("uvrd_*_amd64.deb"))
        return debs[-1]


def prebuild_running() -> bool:
    """Whether `make test`'s prebuild is still making the root, the package or the layer (the
    scheduler runs other modules than the package tests meanwhile: tests/conftest.py)."""
    try:
        pid = int(PREBUILD_PID.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):  # none, or one that ended (make stops it when the tiers end)
        return False
    return True


def prebuild() -> int:
    """The root, then the package, then the package installed on the root (installed_layer.py); a
    host that cannot have the root (no root user, no network) builds none of them here, and the
    fixtures say why when the tests ask."""
    PREBUILD_PID.parent.mkdir(parents=True, exist_ok=True)
    PREBUILD_PID.write_text(f"{os.getpid()}\n")
    try:
        return _prebuild()
    finally:
        PREBUILD_PID.unlink(missing_ok=True)


def _prebuild() -> int:
    # As a script: the test kit (tests/) and the tree's own top-level packages, as pytest has them.
    sys.path[1:1] = [str(REPO / "tests"), str(REPO)]
    from installed_layer import installed_layer
    from rootfs import RootfsUnavailable, cached_root, missing_host_debs

    if missing_host_debs():
        return 0
    try:
        print(cached_root(), flush=True)
    except RootfsUnavailable as e:
        print(f"no Debian root: {e}", flush=True)
        return 0
    deb = built_deb()
    print(deb, flush=True)
    print(installed_layer(cached_root(), deb), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(prebuild())
