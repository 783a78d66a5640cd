"""9. The single-host broker: what `apt install uvrd` runs (Tansu keeping its data in a SeaweedFS
store on local disk, uvrd/broker/local.py) against the in-memory broker of `make run` and the tests.

On each: one exactly-once processor on a near-zero-cost separation (the tiny model, 1 s of audio);
the time of one task alone, from its produce to its result's commit; tasks per second in batches;
Kafka transactions per second from one producer (a record and its commit, as each result is); and
on the durable one, the disk the broker's data grows by per task (Tansu keeps every record: it
neither deletes old ones nor compacts the status topic)."""

from __future__ import annotations

import time
from pathlib import Path

from kafka import KafkaProducer

from uvrd.broker.local import LocalBroker
from uvrd.broker.loopback import free_port

from .harness import Bench, median, say
from .overhead import AUDIO_S, _throughput

TRANSACTIONS = 200


def _measure(bench: Bench, sizes: dict, data_dir: Path | None) -> dict:
    audio = bench.sample(AUDIO_S)
    where = bench.workdir("single-host")
    topics = bench.topics("single-host")
    config = bench.write_config(where, topics, group="single-host")
    reader = bench.results_reader(topics.results)
    proc = bench.daemon("processor", config)
    proc.wait_ready()
    size_before = _size(data_dir)
    alone = []
    for _ in range(sizes["single_host_alone"]):
        sent = time.monotonic()
        bench.send_task(topics.tasks, bench.spool_copy(where / "spool", audio))
        bench.flush()
        [(arrived, _)] = reader.wait(1, 120, proc.alive)
        reader.take()
        alone.append(arrived - sent)
    rates = _throughput(bench, proc.alive, topics.tasks, reader, where / "spool", audio,
                        sizes["overhead_tasks"], sizes["overhead_batches"])
    tasks_done = sizes["single_host_alone"] + sizes["overhead_tasks"] * sizes["overhead_batches"]
    per_task_bytes = (_size(data_dir) - size_before) / tasks_done if data_dir else None
    reader.close()
    bench.forget(proc)
    return {"alone": alone, "rates": rates, "tx_per_s": _transactions(bench.bootstrap, topics.results),
            "bytes_per_task": per_task_bytes}


def _transactions(bootstrap: str, topic: str) -> float:
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"bench-tx-{time.monotonic_ns()}")
    try:
        producer.init_transactions()
        started = time.monotonic()
        for _ in range(TRANSACTIONS):
            producer.begin_transaction()
            producer.send(topic, b"{}", partition=0)
            producer.commit_transaction()
        return TRANSACTIONS / (time.monotonic() - started)
    finally:
        producer.close(timeout=5)


def _size(data_dir: Path | None) -> int:
    if data_dir is None:
        return 0
    return sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())


def run(bench: Bench, sizes: dict) -> dict:
    say("single host: the in-memory broker")
    memory = _measure(bench, sizes, None)
    root = bench.root / "single-host-broker"
    say("single host: the durable broker (Tansu on SeaweedFS)")
    local = LocalBroker(root / "data", port=free_port(), log_dir=root.parent).start()
    durable_bench = Bench(root=root / "bench", broker=local)
    try:
        durable = _measure(durable_bench, sizes, root / "data")
    finally:
        durable_bench.close()
    rows, summary = [], []
    for name, m in (("in memory (make run, tests)", memory), ("durable (uvrd-broker, uvrd dev)", durable)):
        rows.append([name, f"{median(m['alone']) * 1000:.0f} ms", f"{median(m['rates']):.2f}",
                     f"{min(m['rates']):.2f}–{max(m['rates']):.2f}", f"{m['tx_per_s']:.0f}",
                     "—" if m["bytes_per_task"] is None else f"{m['bytes_per_task'] / 1024:.0f} KiB"])
    extra = median(durable["alone"]) - median(memory["alone"])
    summary.append(("single host: one task alone, durable broker against in-memory",
                    f"{median(durable['alone']) * 1000:.0f} ms against {median(memory['alone']) * 1000:.0f} ms "
                    f"({extra * 1000:+.0f} ms per task)"))
    summary.append(("single host: tasks per second, durable against in-memory",
                    f"{median(durable['rates']):.2f} against {median(memory['rates']):.2f}"))
    summary.append(("single host: broker disk per task (never reclaimed)",
                    f"{durable['bytes_per_task'] / 1024:.0f} KiB"))
    return {
        "key": "single_host",
        "title": "9. The single-host broker",
        "intro": (f"One exactly-once processor, the tiny model on {AUDIO_S} s of audio. 'Alone': one task at a "
                  f"time, from its produce to its result's commit (the result's produce time), "
                  f"{sizes['single_host_alone']} tasks. Tasks/s: {sizes['overhead_batches']} batches of "
                  f"{sizes['overhead_tasks']} tasks, as in benchmark 3. Transactions/s: one producer, "
                  f"{TRANSACTIONS} transactions of one record each. Disk: the durable broker's data directory's "
                  f"growth per task (the task, its status records, the result and the offset commits)."),
        "header": ["broker", "one task alone (median)", "tasks/s (median)", "range", "transactions/s",
                   "disk per task"],
        "rows": rows,
        "summary": summary,
        "data": {"memory": memory, "durable": durable},
    }
