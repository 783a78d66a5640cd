"""The installed package as the package tests drive it: its units, the config an admin writes, tasks
put in its spool, and what its journal says.  The fixtures that install it are in conftest.py."""

from __future__ import annotations

import uuid
from pathlib import Path

from support import wait_until
from uvrd.config import TopicsConfig
from devtools import tinymodel

UNIT = "uvrd-processor.service"
# A host with two GPUs runs one template instance per card.
GPU_UNITS = ["uvrd-processor@0.service", "uvrd-processor@1.service"]


def make_topics(broker, request, task_partitions: int = 1) -> TopicsConfig:
    prefix = f"pkg-{request.node.name[:30]}-{uuid.uuid4().hex[:6]}"
    t = TopicsConfig(tasks=f"{prefix}.tasks", results=f"{prefix}.results", dead_letter=f"{prefix}.dlq",
                     status=f"{prefix}.status")
    broker.create_uvrd_topics(t, task_partitions)
    return t


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


def drop_in(box, text: str, unit: str = UNIT) -> None:
    box.write_text(f"/etc/systemd/system/{unit}.d/test.conf", "[Service]\n" + text)
    box.systemctl("daemon-reload")


def start_long_job(box, kafka, topics, long_audio) -> dict:
    task = spool_task(box, long_audio)
    kafka.send(topics.tasks, task)
    wait_until(lambda: box.show(UNIT, "StatusText")["StatusText"].startswith("separating"), 60, "the long job")
    return task
