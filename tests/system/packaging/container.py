"""A real systemd booted in a systemd-nspawn container, driven from the host.

The container shares the host's network, so its services reach a broker on the
host's 127.0.0.1. Commands run inside through `nsenter -a` into the container's
PID 1, which needs no machined, no D-Bus on the host and no login in the container.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Self

from rootfs import fresh_copy
from support import SLOWEST_POLL_S, patient

# What a root login would have: the host's environment is no business of the container's.
CONTAINER_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
}
# Mounted afresh by nspawn at boot: a file written under ROOT there would be hidden.
VOLATILE_DIRS = ("/run", "/tmp", "/dev", "/proc", "/sys")
# A host directory beside the root, bound read-only here: what the host puts in it is hard-linked,
# not copied, where it can be (uvrd's package is 3.7 GB, and CI's disk is not always roomy).
INBOX_DIR = "/srv/inbox"
BOOT_TIMEOUT = 90.0


class ContainerError(RuntimeError):
    pass


class Container:
    def __init__(self, root: Path, console_log: Path | None = None, name: str | None = None):
        self.root = Path(root)
        # nspawn keeps per-name state under the host's /run: containers side by side must not share it.
        self.name = name or f"uvrd-test-{secrets.token_hex(4)}"
        self.console_log = console_log or self.root.parent / "console.log"
        self.nspawn: subprocess.Popen | None = None
        self.pid1: int | None = None
        self.state: str | None = None
        self.inbox = self.root.parent / f"{self.root.name}-inbox"

    # -- life --------------------------------------------------------------------------

    def boot(self, timeout: float = 60.0) -> str:
        """Start the container and return once systemd says the boot is over.

        Returns "running" or "degraded" (a failed unit is the test's business, not the
        harness's). The console goes to console_log: nspawn's read-only console gives
        systemd a real pty without needing one on our side, as pytest has no stdin.
        """
        if self.nspawn is not None:
            raise ContainerError("already booted")
        deadline = time.monotonic() + patient(timeout)
        # If pytest itself is killed, nspawn gets SIGTERM and halts the container rather than
        # leaving a booted system behind that nobody will ever stop.
        self.inbox.mkdir(exist_ok=True)
        cmd = ["setpriv", "--pdeathsig", "TERM", "--",
               "systemd-nspawn", "--quiet", "--directory", str(self.root), "--boot", "--machine", self.name,
               "--register=no", "--keep-unit", "--console=read-only", "--link-journal=no",
               f"--bind-ro={self.inbox}:{INBOX_DIR}"]
        with open(self.console_log, "ab") as console:
            self.nspawn = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        try:
            self.pid1 = self._wait_for_pid1(deadline)
            self.state = self._wait_until_booted(deadline)
        except BaseException:
            self.shutdown()
            raise
        return self.state

    def _wait_for_pid1(self, deadline: float) -> int:
        while time.monotonic() < deadline:
            self._check_alive()
            for pid in _descendants(self.nspawn.pid):
                if _comm(pid) == "systemd" and _ns_pid(pid) == 1:
                    return pid
            time.sleep(0.05)
        raise ContainerError(f"no systemd came up in the container\n{self.console_tail()}")

    def _wait_until_booted(self, deadline: float) -> str:
        while True:
            self._check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                raise ContainerError(f"boot did not finish in time\n{self.console_tail()}")
            try:
                # Fails with "Failed to connect to bus" until PID 1 opens its private socket.
                proc = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=left)
            except subprocess.TimeoutExpired:
                continue
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return state
            # "offline" is also what systemctl says while PID 1 is not yet answering on a busy host:
            # only a live PID 1 in maintenance or stopping has really ended the boot.
            if state in ("maintenance", "stopping"):
                raise ContainerError(f"container boot ended {state!r}\n{self.console_tail()}")
            time.sleep(0.1)

    def _check_alive(self) -> None:
        if self.nspawn is None or self.nspawn.poll() is not None:
            code = None if self.nspawn is None else self.nspawn.returncode
            raise ContainerError(f"systemd-nspawn exited ({code})\n{self.console_tail()}")

    def shutdown(self, timeout: float = 30.0) -> None:
        """Power off; escalate to signals. Never returns with a process of ours alive."""
        if self.nspawn is None:
            return
        nspawn, pid1 = self.nspawn, self.pid1
        try:
            if nspawn.poll() is None and pid1 is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.run("systemctl", "poweroff", "--no-block", check=False, timeout=min(timeout, 10))
                _wait(nspawn, timeout)
            if nspawn.poll() is None:
                nspawn.terminate()  # nspawn turns SIGTERM into a clean halt request
                _wait(nspawn, 10)
        finally:
            # Killing the namespace's init kills every process in it. Its parent being our
            # unreaped nspawn proves the pid was not reused by someone else's process.
            if pid1 is not None and _ppid(pid1) == nspawn.pid and nspawn.returncode is None:
                _signal(pid1, signal.SIGKILL)
            if nspawn.poll() is None:
                _signal(nspawn.pid, signal.SIGKILL)
            nspawn.wait()
            if pid1 is not None:
                _wait_gone(pid1, 10)
            # A killed nspawn cannot tidy its state dir, and the name is unique: it would pile up.
            with contextlib.suppress(OSError):
                Path("/run/systemd/nspawn/propagate", self.name).rmdir()
            self.nspawn = self.pid1 = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def console_tail(self, chars: int = 3000) -> str:
        try:
            return self.console_log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    # -- commands ----------------------------------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 60.0, input: str | None = None,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run argv inside every namespace of the container, as root, with its own paths."""
        if self.pid1 is None:
            raise ContainerError("not booted")
        cmd = ["nsenter", "--target", str(self.pid1), "--all", "--", *argv]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**CONTAINER_ENV, **(env or {})}, start_new_session=True)
        try:
            out, err = proc.communicate(input, timeout=patient(timeout))
        except subprocess.TimeoutExpired:
            # nsenter forks into the PID namespace: the group holds both it and the command.
            _killpg(proc.pid)
            proc.communicate()
            raise
        result = subprocess.CompletedProcess(argv, proc.returncode, out, err)
        if check and result.returncode != 0:
            raise ContainerError(f"{' '.join(argv)} exited {result.returncode}\n"
                                 f"stdout:\n{out[-3000:]}\nstderr:\n{err[-3000:]}")
        return result

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", *args, check=check, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str | None = None, *matches: str, timeout: float = 30.0,
                **fields: str) -> list[dict]:
        """Parsed `journalctl -o json` entries, this boot only, matching all the given fields."""
        argv = ["journalctl", "--no-pager", "--output=json", "--boot"]
        if unit:
            argv += ["--unit", unit]
        argv += [*matches, *(f"{k}={v}" for k, v in fields.items())]
        out = self.run(*argv, timeout=timeout).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_for_journal(self, text: str, unit: str | None = None, timeout: float = 10.0, **fields: str) -> dict:
        """The first entry whose MESSAGE contains text: journald takes a moment to file what it is sent."""
        deadline = time.monotonic() + patient(timeout)
        pause = 0.05
        while True:
            for entry in self.journal(unit, **fields):
                if text in message(entry):
                    return entry
            if time.monotonic() > deadline:
                seen = "\n".join(message(e) for e in self.journal(unit, **fields)[-30:])
                raise ContainerError(f"no journal entry with {text!r} (unit={unit}, {fields}); last:\n{seen}")
            time.sleep(pause)
            pause = min(pause * 1.5, SLOWEST_POLL_S)  # each look starts journalctl in the container

    # -- files -------------------------------------------------------------------------

    def host_path(self, container_path: str) -> Path:
        """Where container_path lives under ROOT, following its symlinks as the container would.

        Plain pathlib would follow an absolute link (Debian's /var/run -> /run) out to the
        host's own directory.
        """
        path = PurePosixPath(container_path)
        if not path.is_absolute():
            raise ValueError(f"{container_path} is not absolute")
        todo, done, hops = list(path.parts[1:]), [], 0
        while todo:
            part = todo.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if done:
                    done.pop()
                continue
            candidate = self.root.joinpath(*done, part)
            if candidate.is_symlink():
                hops += 1
                if hops > 40:
                    raise ValueError(f"too many symlinks resolving {container_path}")
                target = PurePosixPath(os.readlink(candidate))
                if target.is_absolute():
                    done, todo = [], list(target.parts[1:]) + todo
                else:
                    todo = list(target.parts) + todo
                continue
            done.append(part)
        resolved = "/" + "/".join(done)
        if self.nspawn is not None and any(resolved == d or resolved.startswith(d + "/") for d in VOLATILE_DIRS):
            raise ValueError(f"{container_path} is on a mount of the running container: write it with run()")
        return self.root.joinpath(*done)

    def copy_in(self, host_path: Path, container_path: str, mode: int | None = None) -> None:
        dest = self.host_path(container_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(host_path, dest)
        os.chmod(dest, mode if mode is not None else os.stat(host_path).st_mode & 0o7777)

    def put_in_inbox(self, host_path: Path, name: str | None = None) -> str:
        """Make a host file readable in the container at INBOX_DIR/name; returns that path."""
        name = name or Path(host_path).name
        dest = self.inbox / name
        dest.unlink(missing_ok=True)
        try:
            os.link(host_path, dest)
        except OSError:  # another filesystem
            shutil.copyfile(host_path, dest)
        os.chmod(dest, 0o644)
        return f"{INBOX_DIR}/{name}"

    def inbox_path(self, name: str) -> Path:
        """Where the host writes a file the container then reads at INBOX_DIR/name."""
        return self.inbox / name

    def write_text(self, container_path: str, text: str, mode: int = 0o644) -> None:
        dest = self.host_path(container_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        os.chmod(dest, mode)

    # -- packages ----------------------------------------------------------------------

    def install_local_debs(self, debs: list[Path], names: list[str] | None = None,
                           timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """apt-get install debs from a repository inside the container, as an admin would.

        apt sees only that repository: dependencies must already be in the cached root,
        which keeps installs offline and proves the package asks for nothing else.
        """
        repo = self.inbox / "repo"
        repo.mkdir(exist_ok=True)
        for deb in debs:
            self.put_in_inbox(Path(deb), f"repo/{Path(deb).name}")
        # dpkg-scanpackages runs on the host: the container has no dpkg-dev, nor needs it.
        scan = subprocess.run(["dpkg-scanpackages", "--multiversion", "."], cwd=repo,
                              capture_output=True, check=True)
        (repo / "Packages.gz").write_bytes(gzip.compress(scan.stdout))
        os.chmod(repo / "Packages.gz", 0o644)
        self.write_text("/etc/apt/sources.list.d/uvrd-local.list", f"deb [trusted=yes] file:{INBOX_DIR}/repo ./\n")
        only_local = ["-o", "Dir::Etc::SourceList=/etc/apt/sources.list.d/uvrd-local.list",
                      "-o", "Dir::Etc::SourceParts=-", "-o", "APT::Get::List-Cleanup=0"]
        self.run("apt-get", "update", *only_local, timeout=timeout)
        names = names or [_deb_field(Path(d), "Package") for d in debs]
        installed = self.run("apt-get", "install", "-y", "--no-install-recommends", *only_local, *names,
                             timeout=timeout)
        # apt installs from a file: repository in place, without a copy in its cache.
        for deb in debs:
            (repo / Path(deb).name).unlink()
        return installed


def message(entry: dict) -> str:
    value = entry.get("MESSAGE", "")
    # journalctl -o json gives non-UTF-8 messages as arrays of bytes.
    return bytes(value).decode(errors="replace") if isinstance(value, list) else str(value)


def _deb_field(deb: Path, field: str) -> str:
    return subprocess.run(["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True,
                          check=True).stdout.strip()


def _ppid(pid: int) -> int | None:
    try:
        # comm, in parentheses, may hold spaces: split after its closing one.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (ppid := _ppid(int(entry.name))) is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _ns_pid(pid: int) -> int | None:
    """pid as seen in its innermost PID namespace."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    except OSError:
        pass
    return None


def _wait(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass


def _wait_gone(pid: int, timeout: float) -> None:
    """Until the killed init has been reaped: it takes its namespace's processes down first."""
    deadline = time.monotonic() + timeout
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def booted(root: Path, workdir: Path, layers: tuple[Path, ...] = ()) -> Iterator[Container]:
    """A container booted on a fresh copy of *root* (with *layers* over it), powered off afterwards."""
    # The console log sits beside the copy, not in it, so it outlives the container for a failure to be read.
    with fresh_copy(root, workdir / "fs", layers) as fs:
        box = Container(fs, console_log=workdir / "console.log")
        try:
            box.boot(BOOT_TIMEOUT)
            yield box
        finally:
            box.shutdown()
