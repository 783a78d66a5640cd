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
from devtools import tinymodel
from rootfs import _remove_tree, _unmount_below

CACHE_DIR = Path(__file__).resolve().parents[3] / "build" / "installed"
INSTALL_TIMEOUT = 1200.0
WARM_TIMEOUT = 600.0
# What a layer holds besides the install: a change here makes the next run build a new one.
RECIPE = "install, then the processor's numba code compiled"
# The layer must be a plain copy of what changed: no metadata-only copies or redirects pointing
# back into this one mount's lower directory.
LAYER_OPTIONS = "redirect_dir=off,metacopy=off,index=off"


def layer_name(root: Path, deb: Path) -> str:
    # The deb's build stamp names the tree it was built from; its size and mtime tell a rebuild.
    stamp = (deb.parent / ".source-hash")
    source = stamp.read_text() if stamp.exists() else ""
    st = deb.stat()
    key = "\n".join([root.name, deb.name, source, str(st.st_size), str(st.st_mtime_ns), RECIPE])
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
            _compile_once(box)
    finally:
        _unmount_below(merged)
    return True


def _compile_once(box: Container) -> None:
    """The processor's first start compiles librosa's numba code into its CacheDirectory (18 s on an
    idle 2-core host, a minute on a busy one), which every later start reuses.  Each packaging module
    boots a host of its own and paid that compile in its first start; it is paid once here, by the
    unit's own warm-up (the tiny model, a broker never reached: the warm-up comes before the broker),
    and the host is then put back as the install left it: its config, no model, an empty journal.
    What a first start on a fresh install costs is bench section 8's, not these tests'."""
    state = ["/var/lib/uvrd/models", "/var/lib/uvrd/spool", "/var/lib/uvrd/output"]  # the unit's StateDirectory=
    made_here = [d for d in state if not box.host_path(d).exists()]
    models = box.host_path("/var/lib/uvrd/models")
    before = set(os.listdir(models)) if models.exists() else set()
    box.run("cp", "-a", "/etc/uvrd/uvrd.toml", "/root/uvrd.toml.installed")
    box.write_text("/etc/uvrd/uvrd.toml", f"""\
[kafka]
bootstrap_servers = "127.0.0.1:9"
[processor]
model = "{tinymodel.TINY_MODEL}"
mdx_hop_length = {tinymodel.HOP_LENGTH}
mdx_segment_size = {tinymodel.SEGMENT_SIZE}
""", mode=0o640)
    tinymodel.install(models)
    box.run("chown", "-R", "uvrd:uvrd", "/var/lib/uvrd/models")
    box.run("chgrp", "uvrd", "/etc/uvrd/uvrd.toml")
    try:
        box.systemctl("start", "--no-block", "uvrd-processor.service")
        box.wait_for_journal('"model warmed up"', unit="uvrd-processor.service", timeout=WARM_TIMEOUT)
    finally:
        box.systemctl("stop", "uvrd-processor.service", timeout=120)
        box.systemctl("reset-failed", "uvrd-processor.service", check=False)
        box.run("mv", "/root/uvrd.toml.installed", "/etc/uvrd/uvrd.toml")
        for added in set(os.listdir(models)) - before:
            box.run("rm", "-rf", f"/var/lib/uvrd/models/{added}")
        # The warm-up leaves nothing in them (test_engine_warmup.py); what the start created goes.
        for made in made_here:
            box.run("rmdir", made)
        box.run("journalctl", "--rotate")
        box.run("journalctl", "--vacuum-files=1", "--vacuum-time=1s")
    if not os.listdir(box.host_path("/var/cache/uvrd/numba")):
        raise RuntimeError("the processor's warm-up left no compiled code in /var/cache/uvrd/numba")


if __name__ == "__main__":
    from deb_build import prebuild

    raise SystemExit(prebuild())
