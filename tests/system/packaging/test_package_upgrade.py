"""`apt-get upgrade` of the installed package under two running processor instances, each with a
job in flight: dpkg replaces the venv under them, and the postinst restarts each once, after its
drain.  Its own module, so its container runs beside test_package.py's: unpacking the 3.7 GB
package is the longest step of the packaging tests.
"""

from __future__ import annotations

from container import INBOX_DIR
from installed import GPU_UNITS, ran_in, spool_task, starts, wait_separating
from relabel import relabel
from support import wait_until

# This package relabelled as a later version: what an upgrade installs.
NEWER_VERSION = "99.0"


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
