"""``python -m bench.slow_receiver``: webhook latency to healthy receivers while one receiver is slow.

For each slow receiver (none; one that trickles its answer a byte every 0.2 s for ever; one that
never answers) and each ``uploader.concurrency`` (8, the default, and 1): a fresh uploader with
``uploader.timeout`` = 10 s (the default) and one attempt per result, one result for the slow
receiver, then RESULTS results for a healthy receiver, SPACING_S apart.  Latency is the time from
sending a result to the results topic to its webhook arriving, both on this process's monotonic
clock.  One line per case; a few minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid

from kafka import KafkaProducer

from devtools.receiver import WebhookReceiver

from .harness import ROOT, Bench, say

sys.path.insert(0, str(ROOT / "tests"))
from peers import Hanger, Trickler

RESULTS = 12
SPACING_S = 0.25
TIMEOUT_S = 10


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_case(bench: Bench, producer: KafkaProducer, slow_kind: str, concurrency: int) -> str:
    where = bench.workdir(f"slow-{slow_kind}-c{concurrency}")
    topics = bench.topics(f"slow-{slow_kind}-c{concurrency}")
    config = bench.write_config(where, topics, f"g-{where.name}",
                                uploader={"timeout": TIMEOUT_S, "max_attempts": 1, "concurrency": concurrency})
    up = bench.daemon("uploader", config)
    up.wait_ready(120)
    wait(lambda: any(e.get("event") == "partitions assigned" and e.get("partitions") for e in up.log_events()),
         60, "the uploader's partition")
    healthy = WebhookReceiver()
    slow = {"none": None, "trickling": Trickler(interval=0.2), "hanging": Hanger()}[slow_kind]
    try:
        def send(hook_url: str) -> tuple[str, float]:
            task_uuid = str(uuid.uuid4())
            value = {"task_uuid": task_uuid, "success": False, "error_message": "x", "hook_url": hook_url}
            sent = time.monotonic()
            producer.send(topics.results, key=task_uuid.encode(), value=json.dumps(value).encode()).get(10)
            return task_uuid, sent

        if slow is not None:
            send(slow.url())
            wait(lambda: slow.paths(), 30, "the slow delivery to start")
        sent = {}
        for _ in range(RESULTS):
            time.sleep(SPACING_S)  # a steady flow, not one burst
            task_uuid, at = send(healthy.url)
            sent[task_uuid] = at
        wait(lambda: len(healthy.requests) >= RESULTS, 3 * TIMEOUT_S + 60, "every healthy webhook")
        latencies = sorted(r["at"] - sent[json.loads(r["body"])["task_uuid"]] for r in healthy.requests)
        return (f"slow receiver {slow_kind:9} concurrency {concurrency}: {len(latencies)} healthy webhooks, "
                f"latency median {statistics.median(latencies):.3f} s, max {latencies[-1]:.3f} s")
    finally:
        healthy.close()
        if slow is not None:
            slow.close()
        bench.forget(up)


def main() -> int:
    bench = Bench()
    producer = KafkaProducer(bootstrap_servers=bench.bootstrap, acks="all", linger_ms=0)
    try:
        lines = [run_case(bench, producer, kind, concurrency)
                 for kind in ("none", "trickling", "hanging") for concurrency in (8, 1)]
    finally:
        producer.close(5)
        bench.close()
    say(f"uploader.timeout = {TIMEOUT_S} s, max_attempts = 1, {RESULTS} healthy results {SPACING_S} s apart, "
        f"sent after the slow one")
    for line in lines:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
