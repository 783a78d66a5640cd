"""The installed processor units through stops, kills and two GPUs: a job longer than the drain
window, a SIGKILL mid-job, two template instances sharing a topic.  On a container of its own,
beside test_package.py's, so that the two halves run at once."""

from __future__ import annotations

import json
import uuid

from installed import GPU_UNITS, UNIT, configure, drop_in, ran_in, spool_task, start_long_job, wait_separating
from support import KafkaView, wait_until
from devtools import tinymodel


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
