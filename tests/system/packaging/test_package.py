"""`apt-get install uvrd` in a container booting a real systemd, then the units as operators run them.

The package is built from this tree (`make deb`, cached in build/deb while the
tree is unchanged), installed from a local apt repository, and its processor
unit is driven with systemctl against the test's broker on the host's
loopback.  Outcomes are read from outside: the broker's topics and offsets,
systemd's unit state, and the journal.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from container import INBOX_DIR, Container, message
from relabel import relabel
from rootfs import fresh_copy
from support import KafkaView, wait_until
from uvrd.config import TopicsConfig
from devtools import tinymodel

UNIT = "uvrd-processor.service"

# This package relabelled as a later version: what an upgrade installs.
NEWER_VERSION = "99.0"


@pytest.fixture(scope="module")
def box(debian_root, uvrd_deb, tmp_path_factory):
    """One container with the package installed (installing a multi-GB venv is the slow part)."""
    workdir = tmp_path_factory.mktemp("pkg")
    with fresh_copy(debian_root, workdir / "fs") as fs:
        container = Container(fs, console_log=workdir / "console.log")
        try:
            container.boot(90)
            container.install_local_debs([uvrd_deb], timeout=1200)
            yield container
        finally:
            container.shutdown()


def make_topics(broker, request, task_partitions: int = 1) -> TopicsConfig:
    prefix = f"pkg-{request.node.name[:30]}-{uuid.uuid4().hex[:6]}"
    t = TopicsConfig(tasks=f"{prefix}.tasks", results=f"{prefix}.results", dead_letter=f"{prefix}.dlq",
                     status=f"{prefix}.status")
    broker.create_uvrd_topics(t, task_partitions)
    return t


@pytest.fixture
def topics(broker, request) -> TopicsConfig:
    return make_topics(broker, request)


# A host with two GPUs runs one template instance per card.
GPU_UNITS = ["uvrd-processor@0.service", "uvrd-processor@1.service"]


@pytest.fixture
def two_gpus(box, broker, request):
    """Both instances running in one group on a two-partition task topic, one partition each."""
    topics = make_topics(broker, request, task_partitions=2)
    group = f"pkg-{uuid.uuid4().hex[:8]}"
    configure(box, broker, topics, group)
    box.systemctl("start", *GPU_UNITS, timeout=300)
    kafka = KafkaView(broker.bootstrap)

    def split() -> bool:
        owned = []
        for unit in GPU_UNITS:
            assigned = [json.loads(e["MESSAGE"]) for e in box.journal(unit)
                        if '"partitions assigned"' in e["MESSAGE"]]
            owned.append({p for p in assigned[-1]["partitions"] if p.startswith(topics.tasks + "/")}
                         if assigned else set())
        return all(len(o) == 1 for o in owned) and owned[0] != owned[1]

    try:
        wait_until(split, 60, "one task partition for each instance")
        yield topics, group, kafka
    finally:
        box.systemctl("stop", *GPU_UNITS, timeout=700)
        kafka.close()


def wait_separating(box, units: list[str]) -> None:
    wait_until(lambda: all(box.show(u, "StatusText")["StatusText"].startswith("separating") for u in units),
               90, f"a job in flight on {', '.join(units)}")


def starts(box, unit: str) -> int:
    return sum('"processor ready"' in e["MESSAGE"] for e in box.journal(unit))


def ran_in(box, task_uuid: str) -> set[tuple[str, str]]:
    """(unit, invocation) of every journal entry about the task."""
    return {(e["_SYSTEMD_UNIT"], e["_SYSTEMD_INVOCATION_ID"]) for e in box.journal(None, TASK_UUID=task_uuid)}


def configure(box, broker, topics: TopicsConfig, group: str, device: str | None = "auto") -> None:
    """Point the installed config at the test broker and the tiny model, as an admin would edit it.
    This host has no GPU: its per-GPU units run on the CPU only when told they may (*device* "auto")."""
    model_dir = Path(box.host_path("/var/lib/uvrd/models"))
    tinymodel.install(model_dir)
    box.write_text("/etc/uvrd/uvrd.toml", f"""\
[kafka]
bootstrap_servers = "{broker.bootstrap}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_interval_ms = 8000
[topics]
tasks = "{topics.tasks}"
results = "{topics.results}"
dead_letter = "{topics.dead_letter}"
status = "{topics.status}"
[processor]
group_id = "{group}"
model = "{tinymodel.TINY_MODEL}"
output_format = "wav"
mdx_hop_length = {tinymodel.HOP_LENGTH}
mdx_segment_size = {tinymodel.SEGMENT_SIZE}
""" + (f'device = "{device}"\n' if device else ""), mode=0o640)
    box.run("chown", "-R", "uvrd:uvrd", "/var/lib/uvrd")
    box.run("chgrp", "uvrd", "/etc/uvrd/uvrd.toml")


def spool_task(box, audio: Path) -> dict:
    task_uuid = str(uuid.uuid4())
    box.copy_in(audio, f"/var/lib/uvrd/spool/{task_uuid}.wav", mode=0o640)
    box.run("chown", "uvrd:uvrd", f"/var/lib/uvrd/spool/{task_uuid}.wav")
    return {"task_uuid": task_uuid, "audio_path": f"/var/lib/uvrd/spool/{task_uuid}.wav", "hook_url": None}


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

        # Long enough to be caught mid-job, short enough to finish well inside the 54 s window on a busy host.
        long_task = spool_task(box, tinymodel.write_sample(tmp_path / "minute.wav", seconds=60))
        kafka.send(topics.tasks, long_task)
        wait_until(lambda: box.show(UNIT, "StatusText")["StatusText"].startswith("separating"), 60, "the long job")
        box.systemctl("stop", UNIT, timeout=120)  # returns when the drained daemon exited
        # Exited by itself inside TimeoutStopSec: a SIGKILL at its end would read Result=timeout.
        state = box.show(UNIT, "ActiveState", "Result", "ExecMainStatus")
        assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, state
        steps = [json.loads(e["MESSAGE"]).get("event") for e in box.journal(UNIT) if e["MESSAGE"].startswith("{")]
        assert [r["task_uuid"] for r in kafka.results(topics.results)] == [task["task_uuid"], long_task["task_uuid"]], steps
        assert kafka.committed(group, topics.tasks).get(0) == 2
        drain = steps[steps.index("stop requested, draining"):]
        assert drain.index("task succeeded") < drain.index("processor stopped"), drain
    finally:
        kafka.close()


def drop_in(box, text: str, unit: str = UNIT) -> None:
    box.write_text(f"/etc/systemd/system/{unit}.d/test.conf", "[Service]\n" + text)
    box.systemctl("daemon-reload")


def start_long_job(box, kafka, topics, long_audio) -> dict:
    task = spool_task(box, long_audio)
    kafka.send(topics.tasks, task)
    wait_until(lambda: box.show(UNIT, "StatusText")["StatusText"].startswith("separating"), 60, "the long job")
    return task


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


def test_job_longer_than_the_drain_window_stops_in_time_then_completes_once(box, broker, topics, long_audio):
    group = f"pkg-{uuid.uuid4().hex[:8]}"
    configure(box, broker, topics, group)
    drop_in(box, "TimeoutStopSec=8\n")  # drain window 3 s: shorter than the job
    box.systemctl("start", UNIT, timeout=300)
    kafka = KafkaView(broker.bootstrap)
    try:
        task = start_long_job(box, kafka, topics, long_audio)
        box.systemctl("stop", UNIT, timeout=60)
        # Stopped before TimeoutStopSec, by itself: a SIGKILL at its end would read Result=timeout.
        state = box.show(UNIT, "Result", "ExecMainStatus")
        assert state == {"Result": "success", "ExecMainStatus": "0"}, state
        assert kafka.results(topics.results) == [] and kafka.committed(group, topics.tasks).get(0, 0) == 0
        box.systemctl("start", UNIT, timeout=300)
        wait_until(lambda: kafka.committed(group, topics.tasks).get(0) == 1, 120, "the task after the restart")
        assert [r["task_uuid"] for r in kafka.results(topics.results)] == [task["task_uuid"]]
    finally:
        box.systemctl("stop", UNIT, timeout=120)
        box.run("rm", "-rf", f"/etc/systemd/system/{UNIT}.d")
        box.systemctl("daemon-reload")
        kafka.close()


def test_sigkill_mid_job_is_restarted_by_systemd_and_completes_once(box, broker, topics, long_audio):
    group = f"pkg-{uuid.uuid4().hex[:8]}"
    configure(box, broker, topics, group)
    box.systemctl("start", UNIT, timeout=300)
    kafka = KafkaView(broker.bootstrap)
    try:
        task = start_long_job(box, kafka, topics, long_audio)
        # The daemon itself, as the OOM killer would: its engine dies with it (PR_SET_PDEATHSIG).  Killing
        # the whole cgroup instead raced with its exiting processes: systemd answered EIO for "auxiliary
        # processes" once, and once the main process outlived the call and no restart came.
        box.systemctl("kill", "--kill-whom=main", "--signal=SIGKILL", UNIT)
        wait_until(lambda: box.show(UNIT, "NRestarts")["NRestarts"] == "1", 60, "systemd's restart")
        wait_until(lambda: kafka.committed(group, topics.tasks).get(0) == 1, 180, "the redelivered task's commit")
        assert [r["task_uuid"] for r in kafka.results(topics.results)] == [task["task_uuid"]]
    finally:
        box.systemctl("stop", UNIT, timeout=120)
        kafka.close()


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


def test_two_gpu_instances_share_the_work_and_the_target_drains_both(box, two_gpus, long_audio, tmp_path):
    topics, group, kafka = two_gpus
    ready = [json.loads(box.wait_for_journal("processor ready", unit=u)["MESSAGE"]) for u in GPU_UNITS]
    # Derived from the unit name: each instance fences only its own previous run.
    assert [r["transactional_id"].rsplit("-", 1)[-1] for r in ready] == ["processor@0", "processor@1"]
    short = tinymodel.write_sample(tmp_path / "short.wav", seconds=2)
    tasks = [spool_task(box, short) for _ in range(4)]
    for i, task in enumerate(tasks):
        kafka.send(topics.tasks, task, partition=i % 2)
    wait_until(lambda: kafka.committed(group, topics.tasks, partitions=2) == {0: 2, 1: 2}, 120, "four commits")
    units = [ran_in(box, t["task_uuid"]) for t in tasks]
    assert all(len(u) == 1 for u in units), "each task ran in exactly one unit"
    assert {unit for [(unit, _)] in units} == set(GPU_UNITS), "both instances worked"

    long_tasks = [spool_task(box, long_audio) for _ in GPU_UNITS]
    for partition, task in enumerate(long_tasks):
        kafka.send(topics.tasks, task, partition=partition)
    wait_separating(box, GPU_UNITS)
    # PartOf= carries the stop to every instance.  systemctl waits for the target's own job
    # only (a target stops before the units it groups), so the drains are watched here.
    box.systemctl("stop", "uvrd.target", timeout=60)
    wait_until(lambda: all(box.show(u, "ActiveState")["ActiveState"] == "inactive" for u in GPU_UNITS), 700,
               "both instances to drain and stop")
    for unit in GPU_UNITS:
        state = box.show(unit, "ActiveState", "Result", "ExecMainStatus")
        assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}, (unit, state)
        assert not [e for e in box.journal(unit) if "Killing process" in e["MESSAGE"]], "nothing left to SIGKILL"
    results = kafka.results(topics.results)
    assert sorted(r["task_uuid"] for r in results) == sorted(t["task_uuid"] for t in tasks + long_tasks)
    assert all(r["success"] for r in results)
    assert kafka.committed(group, topics.tasks, partitions=2) == {0: 3, 1: 3}


def test_upgrade_drains_each_running_instance_once_and_brings_it_back(box, two_gpus, uvrd_deb, long_audio):
    topics, group, kafka = two_gpus
    before = {u: box.show(u, "InvocationID")["InvocationID"] for u in GPU_UNITS}
    newer = relabel(uvrd_deb, NEWER_VERSION, box.inbox_path("uvrd-newer.deb"))
    # apt's two steps, taken one at a time so jobs are surely in flight at the second: dpkg
    # replaces the venv under the running daemons, then the postinst restarts them.
    box.run("dpkg", "--unpack", f"{INBOX_DIR}/{newer.name}", timeout=1200)
    newer.unlink()
    assert {u: box.show(u, "InvocationID")["InvocationID"] for u in GPU_UNITS} == before, "unpacking stops nothing"
    tasks = [spool_task(box, long_audio) for _ in GPU_UNITS]
    for partition, task in enumerate(tasks):
        kafka.send(topics.tasks, task, partition=partition)
    wait_separating(box, GPU_UNITS)
    starts_before = {u: starts(box, u) for u in GPU_UNITS}
    box.run("dpkg", "--configure", "uvrd", timeout=1200)
    assert box.run("dpkg-query", "-W", "-f=${Version}", "uvrd").stdout == NEWER_VERSION
    for unit in GPU_UNITS:
        after = box.show(unit, "ActiveState", "InvocationID", "NRestarts", "StatusText")
        assert after["ActiveState"] == "active" and after["InvocationID"] != before[unit], (unit, after)
        assert after["NRestarts"] == "0", "restarted by the package, not after a failure"
    wait_until(lambda: kafka.committed(group, topics.tasks, partitions=2) == {0: 1, 1: 1}, 60, "both commits")
    results = kafka.results(topics.results)
    assert sorted(r["task_uuid"] for r in results) == sorted(t["task_uuid"] for t in tasks)
    # Each job finished in the run the upgrade found it in: drained, not cut off and redone.
    ran = [{inv for _, inv in ran_in(box, t["task_uuid"])} for t in tasks]
    assert sorted(map(sorted, ran)) == sorted([inv] for inv in before.values())
    assert [starts(box, u) - n for u, n in starts_before.items()] == [1, 1], "one restart each"
