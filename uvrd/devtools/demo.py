"""``make run``: one separation through a real processor on an embedded broker.

Everything is generated here, offline: the broker (Tansu), a tiny MDX model
and a 10-second sample.  The demo submits the task the way the API will,
waits for the committed result, prints the stems and the timing, then stops
the processor with SIGTERM (the graceful path) and the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from kafka import KafkaConsumer, KafkaProducer

from . import tinymodel
from .broker import EmbeddedBroker

TOPICS = {"tasks": "uvrd.tasks", "results": "uvrd.results", "dead_letter": "uvrd.dead-letter"}


def write_config(root: Path, bootstrap: str) -> Path:
    path = root / "uvrd.toml"
    path.write_text(f"""\
[kafka]
bootstrap_servers = "{bootstrap}"
session_timeout_ms = 6000
heartbeat_interval_ms = 1000
max_poll_interval_ms = 8000

[topics]
tasks = "{TOPICS['tasks']}"
results = "{TOPICS['results']}"
dead_letter = "{TOPICS['dead_letter']}"

[processor]
model = "{tinymodel.TINY_MODEL}"
model_dir = "{root / 'models'}"
spool_dir = "{root / 'spool'}"
output_dir = "{root / 'output'}"
output_format = "flac"
mdx_hop_length = {tinymodel.HOP_LENGTH}
mdx_segment_size = {tinymodel.SEGMENT_SIZE}
drain_timeout = 30
""")
    return path


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="uvrd-demo-"))
    say(f"workspace {root}")
    say("offline demo: a tiny generated model, so the stems are not musically meaningful")
    tinymodel.install(root / "models")
    sample = tinymodel.write_sample(root / "spool" / "sample.wav", seconds=10)
    started = time.monotonic()
    with EmbeddedBroker(log_path=root / "broker.log") as broker:
        broker.create_topics({TOPICS["tasks"]: 1, TOPICS["results"]: 1, TOPICS["dead_letter"]: 1})
        say(f"broker on {broker.bootstrap}")
        config = write_config(root, broker.bootstrap)
        processor = subprocess.Popen([sys.executable, "-m", "uvrd", "processor", "--config", str(config)],
                                     env={**os.environ, "UVRD_LOG_FORMAT": os.environ.get("UVRD_LOG_FORMAT", "console")})
        try:
            task = {"task_uuid": str(uuid.uuid4()), "audio_path": str(sample), "hook_url": "http://localhost/demo"}
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
            producer.send(TOPICS["tasks"], key=task["task_uuid"].encode(), value=json.dumps(task).encode()).get(10)
            producer.close()
            submitted = time.monotonic()
            say(f"submitted task {task['task_uuid']}")
            result = wait_for_result(broker.bootstrap, task["task_uuid"], processor, timeout=300)
            took = time.monotonic() - submitted
        finally:
            processor.send_signal(signal.SIGTERM)
            code = processor.wait(60)
    if not result.get("success"):
        say(f"task failed: {result.get('error_message')}")
        return 1
    say(f"task {result['task_uuid']} succeeded in {took:.1f} s (including the model load)")
    for stem, path in sorted(result["stems"].items()):
        say(f"  {stem:<13} {path}")
    say(f"processor exited with status {code} after SIGTERM; total {time.monotonic() - started:.1f} s")
    return 0 if code == 0 else 1


def wait_for_result(bootstrap: str, task_uuid: str, processor: subprocess.Popen, timeout: float) -> dict:
    consumer = KafkaConsumer(TOPICS["results"], bootstrap_servers=bootstrap, isolation_level="read_committed",
                             auto_offset_reset="earliest", enable_auto_commit=False)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if processor.poll() is not None:
                raise SystemExit(f"processor exited with status {processor.returncode}")
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    result = json.loads(record.value)
                    if result.get("task_uuid") == task_uuid:
                        return result
        raise SystemExit(f"no result within {timeout} s")
    finally:
        consumer.close()


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
