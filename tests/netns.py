"""Hosts for multi-host tests: Linux network namespaces on one private switch.

Each host is a namespace ``uvrd-<pid>-<name>`` with its own loopback and one
``eth0`` on ``10.213.0.0/24``; the switch is a bridge inside a namespace of its
own.  Nothing is added to the caller's namespace: the veth pairs are made
between the switch and each host, and no namespace has a route beyond the
subnet, so every packet stays inside the namespaces made here (or on a
loopback).

The test process takes part as a host too: ``entered(name)`` moves the calling
thread into a namespace (``setns``), so its sockets, the threads it starts and
the processes it spawns live on that host; leaving puts the thread back.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import subprocess

CLONE_NEWNET = 0x40000000
SUBNET = "10.213.0"
RUN_NETNS = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


class Unavailable(Exception):
    """Network namespaces cannot be made here (no `ip`, not root, no CAP_SYS_ADMIN, ...)."""


def _ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(prefix: str = "uvrd-") -> None:
    """Namespaces an earlier test process made and could not delete (it was killed): only
    names of the form ``<prefix><pid>-...`` whose process is gone."""
    try:
        listed = _ip("netns", "list")
    except RuntimeError:
        return
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(re.escape(prefix) + r"(\d+)-[a-z0-9]+", name)
        if m and not _alive(int(m.group(1))):
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


class Network:
    """A switch and the hosts on it; ``close()`` deletes every namespace it made."""

    def __init__(self, prefix: str | None = None):
        if shutil.which("ip") is None:
            raise Unavailable("no `ip` command (iproute2)")
        self.prefix = prefix or f"uvrd-{os.getpid()}"
        self.hosts: dict[str, str] = {}  # name -> address
        self._namespaces: list[str] = []
        remove_stale()
        self.switch = self._add_namespace("sw", unavailable_ok=True)
        try:
            _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except RuntimeError as e:
            self.close()
            raise Unavailable(str(e)) from None

    def namespace(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def _add_namespace(self, name: str, unavailable_ok: bool = False) -> str:
        ns = self.namespace(name)
        try:
            _ip("netns", "add", ns)
        except RuntimeError as e:
            if unavailable_ok:
                raise Unavailable(str(e)) from None
            raise
        self._namespaces.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")
        return ns

    def add_host(self, name: str) -> str:
        """A new host on the switch; returns its address."""
        assert re.fullmatch(r"[a-z0-9]{1,12}", name) and name != "sw" and name not in self.hosts, name
        address = f"{SUBNET}.{len(self.hosts) + 1}"
        ns = self._add_namespace(name)
        _ip("-n", self.switch, "link", "add", "name", f"to-{name}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("-n", self.switch, "link", "set", f"to-{name}", "master", "br0", "up")
        _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        self.hosts[name] = address
        return address

    def routes(self, host: str) -> list[str]:
        return _ip("-n", self.namespace(host), "route", "show").splitlines()

    @contextlib.contextmanager
    def entered(self, host: str):
        """Run the calling thread on *host* (its network namespace) inside the block."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"{RUN_NETNS}/{self.namespace(host)}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield self.hosts[host]
            finally:
                _setns(own)
        finally:
            os.close(own)

    def close(self) -> None:
        """Delete every namespace made here (the switch last; its veth ends go with the hosts).
        Stop the processes started inside them first: a namespace with a process left lives
        on, nameless, until that process exits."""
        for ns in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "delete", ns], check=False, capture_output=True)
        self._namespaces.clear()
