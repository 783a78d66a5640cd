"""`apt-get install uvrd` done once per package: the files it changed, kept as an overlay layer.

Every module that needs the package installed used to boot its own container and install the
3.7 GB package in it (about three minutes each on 2 cores, three modules at once).  The install is
now done once, in a container whose overlay's upper directory is kept when it powers off: that
directory is the install's whole effect on the root (whiteouts included), and a test's container
stacks it over the Debian root (rootfs.fresh_copy's *layers*), booting a host on which uvrd was
just installed.  It is rebuilt when the package or the root changes, and made by `make test`'s
prebuild beside the first two tiers (deb_build.py), so the system tier finds it ready.

Where the kernel refuses an overlay, no layer is made and the fixtures install in each container.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from container import BOOT_TIMEOUT, Container, booted
from rootfs import _remove_tree, _unmount_below

CACHE_DIR = Path(__file__).resolve().parents[3] / "build" / "installed"
INSTALL_TIMEOUT = 1200.0
# The layer must be a plain copy of what changed: no metadata-only copies or redirects pointing
# back into this one mount's lower directory.
LAYER_OPTIONS = "redirect_dir=off,metacopy=off,index=off"


def layer_name(root: Path, deb: Path) -> str:
    # The deb's build stamp names the tree it was built from; its size and mtime tell a rebuild.
    stamp = (deb.parent / ".source-hash")
    source = stamp.read_text() if stamp.exists() else ""
    st = deb.stat()
    key = "\n".join([root.name, deb.name, source, str(st.st_size), str(st.st_mtime_ns)])
    return "uvrd-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def installed_layer(root: Path, deb: Path, cache_dir: Path = CACHE_DIR) -> Path | None:
    """The layer holding *deb* installed on *root*, made first if no earlier run made it; None
    where this host cannot mount an overlay (each container then installs for itself)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / layer_name(root, deb)
    if (final / ".done").exists():
        return final / "layer"
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # xdist workers and the prebuild wait for one install
        if (final / ".done").exists():
            return final / "layer"
        # Another package's layer, or one an interrupted run left half made: gigabytes each.
        for stale in cache_dir.iterdir():
            if stale.is_dir():
                _remove_tree(stale)
        making = cache_dir / f".making-{final.name}"
        try:
            if not _install_into(root, deb, making):
                return None
            final.mkdir()
            os.rename(making / "upper", final / "layer")
            (final / ".done").write_text(f"{deb}\n")
        finally:
            _remove_tree(making)
        return final / "layer"


@contextlib.contextmanager
def installed_box(root: Path, deb: Path, layer: Path | None, workdir: Path) -> Iterator[Container]:
    """A container booted on a host where *deb* was just installed: *layer* stacked over *root*,
    or, without a layer, installed in it here."""
    with booted(root, workdir, (layer,) if layer else ()) as box:
        if layer is None:
            box.install_local_debs([deb], timeout=INSTALL_TIMEOUT)
        yield box


def _install_into(root: Path, deb: Path, making: Path) -> bool:
    merged, upper, work = making / "root", making / "upper", making / "work"
    for d in (merged, upper, work):
        d.mkdir(parents=True)
    os.chmod(upper, root.stat().st_mode & 0o7777)
    mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                              f"lowerdir={root},upperdir={upper},workdir={work},{LAYER_OPTIONS}", str(merged)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        return False
    try:
        with Container(merged, console_log=making / "console.log") as box:
            box.boot(BOOT_TIMEOUT)
            box.install_local_debs([deb], timeout=INSTALL_TIMEOUT)
            # The local repository's source line: its directory (this container's inbox) is gone.
            box.run("rm", "-f", "/etc/apt/sources.list.d/uvrd-local.list")
    finally:
        _unmount_below(merged)
    return True


if __name__ == "__main__":
    from deb_build import prebuild

    raise SystemExit(prebuild())
