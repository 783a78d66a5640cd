"""A Debian root filesystem for booting systemd in a container: built once with
debootstrap, cached under build/, and handed to each test as a pristine overlay.

Run as a script for the steps a Makefile wants outside pytest:
    python tests/system/packaging/rootfs.py host-deps   # apt-get the tools this needs
    python tests/system/packaging/rootfs.py build       # build (or reuse) the cached root
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
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE_DIR = REPO / "build" / "debootstrap"

SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = "http://deb.debian.org/debian"
# python3 and ffmpeg are what the uvrd package needs at run time: baking them in keeps
# every test's `apt-get install uvrd` offline, against the local repository alone.
INCLUDE = ("systemd", "dbus", "ca-certificates", "python3", "ffmpeg")
# Changing what _finish does must not reuse roots finished the old way.
RECIPE_VERSION = "2"

HOST_DEBS = ("debootstrap", "systemd-container", "dpkg-dev")
HOST_TOOLS = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container",
              "nsenter": "util-linux", "dpkg-scanpackages": "dpkg-dev"}


class RootfsUnavailable(RuntimeError):
    """The root cannot be had here for a reason outside the code (no network, no tools)."""


def missing_host_debs() -> list[str]:
    return sorted({deb for tool, deb in HOST_TOOLS.items() if shutil.which(tool) is None})


def install_host_deps() -> None:
    """The one documented step before these tests: the host tools, from Debian."""
    missing = missing_host_debs()
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def root_name() -> str:
    key = "\n".join([SUITE, VARIANT, MIRROR, ",".join(sorted(INCLUDE)), RECIPE_VERSION])
    return f"{SUITE}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def cached_root(cache_dir: Path = CACHE_DIR, log: Path | None = None) -> Path:
    """The finished root, debootstrapping it first if no earlier run did.

    The build happens in a temporary sibling renamed into place only when done, so an
    interrupted build never leaves a directory that looks finished. A lock file makes
    concurrent callers (pytest-xdist workers) wait for one build instead of racing.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    final = cache_dir / root_name()
    if _is_done(final):
        return final
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_done(final):
            return final
        # Whoever held the lock before us finished or died: any temp build left is stale.
        for stale in cache_dir.glob(".building-*"):
            _remove_tree(stale)
        if final.exists():
            _remove_tree(final)
        _check_prerequisites()
        tmp = Path(tempfile.mkdtemp(prefix=f".building-{final.name}-", dir=cache_dir))
        try:
            os.chmod(tmp, 0o755)  # it becomes the container's "/": mkdtemp's 0700 would lock out every other user
            _debootstrap(tmp, log or cache_dir / f"{final.name}.log")
            _finish(tmp)
            (tmp / ".uvrd-rootfs-done").write_text(f"{root_name()}\n")
            os.rename(tmp, final)
        except BaseException:
            _remove_tree(tmp)
            raise
    return final


def _is_done(root: Path) -> bool:
    return (root / ".uvrd-rootfs-done").is_file()


def _check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise RootfsUnavailable("debootstrap needs root")
    if missing := missing_host_debs():
        raise RootfsUnavailable(f"missing host packages {missing}: run `python tests/system/packaging/rootfs.py host-deps`")
    try:
        urllib.request.urlopen(f"{MIRROR}/dists/{SUITE}/Release", timeout=10).close()
    except OSError as e:
        raise RootfsUnavailable(f"the Debian mirror {MIRROR} is unreachable: {e}") from e


def _debootstrap(target: Path, log: Path) -> None:
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.run(
            ["debootstrap", f"--variant={VARIANT}", f"--include={','.join(INCLUDE)}", SUITE, str(target), MIRROR],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        # A mirror that answered the Release check but dropped a download is still "no network".
        network = any(s in tail for s in ("Failed getting release file", "Couldn't download", "Temporary failure"))
        kind = RootfsUnavailable if network else RuntimeError
        raise kind(f"debootstrap exited {proc.returncode} (log {log}):\n{tail}")
    with open(log, "a") as out:
        out.write(f"\ndebootstrap took {time.monotonic() - started:.0f}s\n")


def _finish(root: Path) -> None:
    """What a booted test container should not do: sit on a console nobody reads."""
    for unit in ("console-getty.service",):
        link = root / "etc/systemd/system" / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    # debootstrap keeps the .debs it installed: they are only weight in every copy.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    # What a throwaway test host may skip that a real one may not.  dpkg's fsync of each of the
    # package's files before its rename: the containers' roots are overlays the test removes (an unpack
    # of the 3.7 GB package on an idle machine: 50 s with the syncs, 41 s without; throwaway build roots
    # and container images commonly skip them the same way).  One torch thread per process, as for the
    # processes the tests start on the host (tests/conftest.py): the containers share the host's cores
    # with the other test processes.
    (root / "etc/dpkg/dpkg.cfg.d/unsafe-io").write_text("force-unsafe-io\n")
    conf = root / "etc/systemd/system.conf.d"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "one-torch-thread.conf").write_text("[Manager]\nDefaultEnvironment=OMP_NUM_THREADS=1\n")


@contextlib.contextmanager
def fresh_copy(root: Path, dest: Path, layers: Sequence[Path] = ()) -> Iterator[Path]:
    """A pristine, writable view of root at dest/root for one container's life, with *layers*
    (upper directories kept from earlier overlays, the topmost first) stacked over it.

    An overlay costs nothing to set up and leaves the cached root untouched; where the
    kernel refuses one (dest on an overlay itself, say) a full copy does the same job
    (without layers: whoever made them mounted an overlay here).
    """
    dest.mkdir(parents=True, exist_ok=True)
    merged, upper, work = dest / "root", dest / "upper", dest / "work"
    for d in (merged, upper, work):
        d.mkdir()
    # The merged "/" takes the upper directory's owner and mode.
    os.chmod(upper, root.stat().st_mode & 0o7777)
    lower = ":".join(str(d) for d in (*layers, root))
    opts = f"lowerdir={lower},upperdir={upper},workdir={work}"
    mounted = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
                             capture_output=True, text=True, check=False).returncode == 0
    if not mounted:
        if layers:
            raise RuntimeError(f"no overlay of {root} with the layers {list(map(str, layers))}")
        merged.rmdir()
        subprocess.run(["cp", "-a", "--reflink=auto", str(root), str(merged)], check=True)
    try:
        yield merged
    finally:
        if mounted:
            _unmount_below(merged)
        _remove_tree(dest)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


def _unmount_below(path: Path) -> None:
    # Deepest first; lazily, so a process still holding a file cannot keep a test's tree alive.
    for point in sorted(_mounts_below(path), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _remove_tree(path: Path) -> None:
    """rm -rf that cannot reach through a mount (an interrupted debootstrap leaves /proc mounted)."""
    if not path.exists():
        return
    _unmount_below(path)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["host-deps"]:
        install_host_deps()
    elif sys.argv[1:] == ["build"]:
        print(cached_root())
    else:
        sys.exit(__doc__)
