"""`apt-get install uvrd` in a container booting a real systemd, then the units as operators run them.

The package is built from this tree (`make deb`, cached in build/deb while the
tree is unchanged), installed from a local apt repository, and its processor
unit is driven with systemctl against the test's broker on the host's
loopback.  Outcomes are read from outside: the broker's topics and offsets,
systemd's unit state, and the journal.  The drains, restarts and two-GPU tests
are in test_package_restarts.py and the upgrade in test_package_upgrade.py, each on a
container of its own beside this one.
"""

from __future__ import annotations

import json
import uuid

from container import message
from installed import GPU_UNITS, UNIT, configure, drop_in, make_topics, spool_task
from support import KafkaView, wait_until
from devtools import tinymodel

def test_install_leaves_nothing_running_and_everything_in_place(box):
    assert box.run("uvrd", "--version").stdout.strip() == "uvrd 0.1.0"
    assert box.run("readlink", "-f", "/usr/bin/uvrd").stdout.strip() == "/opt/venvs/uvrd/bin/uvrd"
    assert box.run("getent", "passwd", "uvrd").stdout.split(":")[6].strip() in ("/usr/sbin/nologin", "/sbin/nologin")
    assert "/etc/uvrd/uvrd.toml" in box.run("dpkg-query", "-W", "-f=${Conffiles}", "uvrd").stdout
    for unit in ("uvrd-processor.service", "uvrd-uploader.service", "uvrd-api.service"):
        state = box.show(unit, "ActiveState", "UnitFileState", "NRestarts")
        assert state["ActiveState"] == "inactive" and state["UnitFileState"] == "disabled", (unit, state)


def test_the_package_ships_no_test_tooling(box):
    """The demo, the model builders and the test kit live beside the package (devtools/, tests/,
    bench/), never in what an operator installs."""
    # dpkg's list of what the package installed: the .deb's own contents, without reading 3.7 GB again.
    listing = box.run("dpkg", "-L", "uvrd").stdout.splitlines()
    own = [path for path in listing if "/site-packages/uvrd" in path]
    assert any(path.endswith("/uvrd/processor/daemon.py") for path in own), "the listing names uvrd's own files"
    shipped_kit = [path for path in own if any(f"/{part}/" in path for part in ("devtools", "tests", "bench"))]
    assert shipped_kit == []
    assert not [path for path in listing if "/site-packages/devtools" in path]


def test_units_verify_and_stay_under_exposure_2_where_installed(box):
    box.run("systemd-analyze", "verify", "uvrd-processor.service", "uvrd-uploader.service", "uvrd-api.service",
            "uvrd-processor@0.service", "uvrd-broker.service", "uvrd.target")
    for unit in ("uvrd-processor.service", "uvrd-processor@0.service", "uvrd-uploader.service", "uvrd-api.service",
                 "uvrd-broker.service"):
        box.run("systemd-analyze", "security", "--threshold=20", unit)


def test_processor_under_systemd_works_drains_and_logs_fields(box, broker, topics, tmp_path):
    group = f"pkg-{uuid.uuid4().hex[:8]}"
    configure(box, broker, topics, group)
    # The drain window follows TimeoutStopSec, changed the way `systemctl edit` does.
    box.write_text(f"/etc/systemd/system/{UNIT}.d/stop.conf", "[Service]\nTimeoutStopSec=60\n")
    box.systemctl("daemon-reload")
    box.systemctl("start", UNIT, timeout=300)  # returns after READY=1
    assert box.show(UNIT, "ActiveState")["ActiveState"] == "active"
    # READY=1 came after the warm-up, which compiled librosa's numba code into the unit's CacheDirectory
    # (the venv is read-only under ProtectSystem=strict), where the next start finds it.
    assert json.loads(box.wait_for_journal('"engine ready"', unit=UNIT)["MESSAGE"])["warmup_s"] > 0
    assert box.run("find", "/var/cache/uvrd/numba", "-name", "*.nbi").stdout.split()
    # Where the model really runs, for `systemctl status`: this container has no GPU.
    assert box.show(UNIT, "StatusText")["StatusText"].startswith("idle, ") and \
        box.show(UNIT, "StatusText")["StatusText"].endswith(" on CPUExecutionProvider")
    # The running daemon, not just its unit file: the uvrd user, no capabilities, no way to gain any.
    status = dict(line.split(":", 1) for line in
                  box.run("cat", f"/proc/{box.show(UNIT, 'MainPID')['MainPID']}/status").stdout.splitlines())
    uvrd_uid = box.run("id", "-u", "uvrd").stdout.strip()
    assert status["Uid"].split() == [uvrd_uid] * 4 and uvrd_uid != "0"
    assert int(status["CapEff"], 16) == int(status["CapBnd"], 16) == 0
    assert status["NoNewPrivs"].strip() == "1"
    assert "Status: \"idle, " in box.systemctl("status", UNIT, "--no-pager", check=False).stdout
    window = box.wait_for_journal("drain window from the unit's TimeoutStopSec", unit=UNIT)
    assert json.loads(window["MESSAGE"])["drain_window_s"] == 54.0  # 60 s less the 10 % margin

    kafka = KafkaView(broker.bootstrap)
    try:
        short = tinymodel.write_sample(tmp_path / "short.wav", seconds=2)
        task = spool_task(box, short)
        kafka.send(topics.tasks, task)
        wait_until(lambda: kafka.committed(group, topics.tasks).get(0) == 1, 120, "the first result's commit")
        [result] = kafka.results(topics.results)
        assert result["success"] is True and result["task_uuid"] == task["task_uuid"]
        entries = box.journal(None, TASK_UUID=task["task_uuid"])
        events = {json.loads(e["MESSAGE"])["event"] for e in entries}
        assert {"task started", "task succeeded"} <= events, events
        assert all(e["_SYSTEMD_UNIT"] == UNIT for e in entries)

        # Long enough to be caught mid-job, short enough to finish inside the 54 s window on an idle host.
        long_task = spool_task(box, tinymodel.write_sample(tmp_path / "minute.wav", seconds=60))
        kafka.send(topics.tasks, long_task)
        wait_until(lambda: box.show(UNIT, "StatusText")["StatusText"].startswith("separating"), 60, "the long job")
        box.systemctl("stop", UNIT, timeout=120)  # returns when the drained daemon exited
        # Exited by itself inside TimeoutStopSec: a SIGKILL at its end would read Result=timeout.
        state = box.show(UNIT, "ActiveState", "Result", "ExecMainStatus")
        assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, state
        steps = [json.loads(e["MESSAGE"]).get("event") for e in box.journal(UNIT) if e["MESSAGE"].startswith("{")]
        drain = steps[steps.index("stop requested, draining"):]
        results = [r["task_uuid"] for r in kafka.results(topics.results)]
        # The drain ends the job in flight one of two ways, and the journal says which: finished inside the
        # window (its result committed before the exit), or, on a machine too busy for that, left
        # uncommitted for redelivery. Never a result without its commit, or a commit without its result.
        if "task left uncommitted for redelivery" in drain:
            assert results == [task["task_uuid"]], drain
            assert kafka.committed(group, topics.tasks).get(0) == 1
        else:
            assert results == [task["task_uuid"], long_task["task_uuid"]], drain
            assert kafka.committed(group, topics.tasks).get(0) == 2
            assert drain.index("task succeeded") < drain.index("processor stopped"), drain
    finally:
        kafka.close()


def test_a_broken_config_fails_once_with_78_and_does_not_loop(box):
    box.write_text("/etc/uvrd/uvrd.toml", "[processor]\ncommit = 'sometimes'\n", mode=0o644)
    box.systemctl("start", UNIT, check=False, timeout=120)
    state = box.show(UNIT, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert state == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}, state
    box.wait_for_journal("processor.commit must be one of", unit=UNIT)
    box.systemctl("reset-failed", UNIT)


def test_a_gpu_instance_on_a_host_without_a_gpu_fails_once_with_78_and_one_line(box, broker, request):
    unit = GPU_UNITS[0]
    configure(box, broker, make_topics(broker, request), f"pkg-{uuid.uuid4().hex[:8]}", device=None)
    box.systemctl("start", unit, check=False, timeout=300)
    state = box.show(unit, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert state == {"ActiveState": "failed", "Result": "exit-code", "ExecMainStatus": "78", "NRestarts": "0"}, state
    refused = box.wait_for_journal('processor.device is \\"cuda\\" but', unit=unit)
    assert "runs on CPUExecutionProvider" in message(refused) and "onnxruntime-gpu" in message(refused)
    box.systemctl("reset-failed", unit)


def test_a_hung_engine_stops_the_watchdog_and_systemd_restarts_the_unit(box, broker, topics):
    configure(box, broker, topics, f"pkg-{uuid.uuid4().hex[:8]}")
    drop_in(box, "WatchdogSec=4\nEnvironment=UVRD_PROCESSOR_ENGINE_STALL_TIMEOUT=2\n")
    try:
        box.systemctl("start", UNIT, timeout=300)
        main = box.show(UNIT, "MainPID")["MainPID"]
        # The engine is the child started by multiprocessing's spawn (the other is its resource tracker).
        engine = box.run("sh", "-c", f"for p in $(cat /proc/{main}/task/*/children); do "
                                     "grep -q spawn_main /proc/$p/cmdline && echo $p; done").stdout.split()[0]
        box.run("sh", "-c", f"kill -STOP {engine}")
        wait_until(lambda: box.show(UNIT, "NRestarts")["NRestarts"] == "1", 60, "the watchdog restart")
        box.wait_for_journal("Watchdog timeout", unit=UNIT, timeout=60)
        box.wait_for_journal("Failed with result 'watchdog'", unit=UNIT, timeout=60)
    finally:
        box.systemctl("stop", UNIT, timeout=120)
        box.run("rm", "-rf", f"/etc/systemd/system/{UNIT}.d")
        box.systemctl("daemon-reload")
