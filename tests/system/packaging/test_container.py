"""The container harness on a real systemd: notify units, graceful stops, the journal,
apt installs from a local repository, and a shutdown that leaves nothing running."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from container import Container, message
from rootfs import fresh_copy

SCRIPTS = "/usr/local/lib/harness-test"

# sd_notify by hand: these tests prove the container, not a library.
NOTIFY = r'''
import os, socket

def notify(state):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect(addr)
        s.sendall(state.encode())
'''

SLOW_READY = NOTIFY + r'''
import sys, time
time.sleep(float(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    f.write(repr(time.time()))
notify("READY=1\nSTATUS=serving from the container")
while True:
    time.sleep(60)
'''

DRAINING = NOTIFY + r'''
import signal, sys, time

def drain(*_):
    print("draining", flush=True)
    time.sleep(2)
    print("drained", flush=True)
    with open(sys.argv[1], "w") as f:
        f.write("drained")
    sys.exit(0)

signal.signal(signal.SIGTERM, drain)
notify("READY=1")
while True:
    signal.pause()
'''

JOURNAL_SEND = r'''
import socket, sys
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
    s.connect("/run/systemd/journal/socket")
    s.sendall(f"MESSAGE=native entry\nTASK_UUID={sys.argv[1]}\nSYSLOG_IDENTIFIER=harness-test\n".encode())
'''


def install_unit(container: Container, name: str, script: str, args: str = "", **service: str) -> str:
    container.write_text(f"{SCRIPTS}/{name}.py", script)
    settings = {"Type": "notify", "ExecStart": f"/usr/bin/python3 {SCRIPTS}/{name}.py {args}".strip(), **service}
    body = "\n".join(f"{k}={v}" for k, v in settings.items())
    unit = f"harness-{name}.service"
    container.write_text(f"/etc/systemd/system/{unit}", f"[Unit]\nDescription={name}\n\n[Service]\n{body}\n")
    container.systemctl("daemon-reload")
    return unit


def test_boots_a_real_systemd(container):
    assert container.state in ("running", "degraded")
    assert container.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert container.run("systemd-detect-virt", "--container").stdout.strip() == "systemd-nspawn"


def test_start_returns_after_ready_and_status_is_shown(container):
    delay = 1.5
    unit = install_unit(container, "notify", SLOW_READY, f"{delay} /var/lib/harness-ready-at")
    began = time.time()
    container.systemctl("start", unit)
    returned = time.time()
    ready_at = float(container.host_path("/var/lib/harness-ready-at").read_text())
    assert began + delay <= ready_at <= returned, "systemctl start returned before READY=1"
    props = container.show(unit, "ActiveState", "SubState", "StatusText")
    assert props == {"ActiveState": "active", "SubState": "running", "StatusText": "serving from the container"}
    container.systemctl("stop", unit)
    container.host_path("/var/lib/harness-ready-at").unlink()


def test_stop_waits_for_the_drain_and_ends_inactive(container):
    marker = "/var/lib/harness-drained"
    unit = install_unit(container, "drain", DRAINING, marker, TimeoutStopSec="60", KillMode="mixed")
    container.systemctl("start", unit)
    container.systemctl("stop", unit)
    # It waited for the drain: the file the drain writes last is there when the stop returns...
    assert container.host_path(marker).read_text() == "drained", "systemctl stop returned before the drain ended"
    container.host_path(marker).unlink()
    # ...and no longer: the service exited by itself (a SIGKILL at TimeoutStopSec would read Result=timeout).
    props = container.show(unit, "ActiveState", "Result", "ExecMainStatus")
    assert props == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert container.systemctl("is-failed", unit, check=False).stdout.strip() == "inactive"
    container.wait_for_journal("draining", unit=unit)
    lines = [message(e) for e in container.journal(unit, _PID=container.wait_for_journal("drained", unit=unit)["_PID"])]
    assert lines == ["draining", "drained"]


def test_native_journal_fields_are_searchable(container):
    task = str(uuid.uuid4())
    container.run("python3", "-c", JOURNAL_SEND, task)
    entry = container.wait_for_journal("native entry", TASK_UUID=task)
    assert entry["TASK_UUID"] == task
    assert entry["SYSLOG_IDENTIFIER"] == "harness-test"
    assert len(container.journal(TASK_UUID=task)) == 1


def test_reaches_the_hosts_loopback(container):
    # Later tests run a broker on the host's 127.0.0.1 and uvrd in the container.
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(10)
        port = server.getsockname()[1]
        container.run("python3", "-c", "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])),"
                      " timeout=5).sendall(b'hello from the container')", str(port))
        conn, _ = server.accept()
        with conn:
            assert conn.recv(100) == b"hello from the container"


def build_deb(workdir: Path, name: str, version: str, files: dict[str, str], depends: str = "") -> Path:
    tree = workdir / f"{name}_{version}"
    for path, text in files.items():
        dest = tree / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
    control = {"Package": name, "Version": version, "Architecture": "all", "Maintainer": "uvrd tests <root@localhost>",
               "Description": "a package the container harness installs", "Depends": depends}
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text("".join(f"{k}: {v}\n" for k, v in control.items() if v))
    deb = workdir / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb


def test_install_local_debs_through_apt(container, tmp_path):
    deb = build_deb(tmp_path, "harness-probe", "1.0", {"/usr/share/harness-probe/hello.txt": "hello\n"},
                    depends="python3, ffmpeg")
    try:
        container.install_local_debs([deb])
        assert container.run("dpkg-query", "-W", "-f=${Status} ${Version}", "harness-probe").stdout == \
            "install ok installed 1.0"
        assert container.run("cat", "/usr/share/harness-probe/hello.txt").stdout == "hello\n"
    finally:
        container.run("apt-get", "purge", "-y", "harness-probe", check=False)
        container.run("rm", "-f", "/etc/apt/sources.list.d/uvrd-local.list")


def test_host_path_stays_inside_the_root(container):
    # /var/lock -> /run/lock: an absolute link that plain pathlib would follow onto the host.
    with pytest.raises(ValueError, match="mount of the running container"):
        container.host_path("/var/lock/x")
    assert container.host_path("/bin/true") == container.root / "usr/bin/true"


def test_a_second_container_boots_beside_and_shutdown_leaves_nothing(debian_root, container, tmp_path):
    with fresh_copy(debian_root, tmp_path / "other") as fs:
        other = Container(fs, console_log=tmp_path / "other.log")
        other.boot(90)
        nspawn, pid1 = other.nspawn.pid, other.pid1
        other.run("touch", "/etc/only-in-the-other")
        assert not container.host_path("/etc/only-in-the-other").exists()
        other.shutdown()
    for pid in (nspawn, pid1):
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} outlived shutdown()"
    assert other.nspawn is None
