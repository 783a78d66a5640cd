"""1. Stop latency, idle: SIGTERM to exit of an idle processor, uploader and api, beside the old
``for message in consumer:`` loop, which only notices the stop when the next message arrives; and
of a processor and an uploader stopped during their first group join, which the broker holds
(Tansu: a round of 3 s)."""

from __future__ import annotations

import sys
import time
import urllib.request
import uuid
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.admin import NewTopic

from uvrd.kafka import group_leave

from .harness import Bench, Proc, max_or_nan, median, pct, say, wait_event

EXIT_TIMEOUT_S = 60
API_WORKERS = 2
JOIN_SETTLE_S = 0.3  # after READY=1: the first poll has sent its JoinGroup, which the broker holds for its round


def _healthz(url: str):
    def check():
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False
    return check


def _measure(procs: list[Proc], settle: float) -> list[float]:
    """SIGTERM each idle process in turn (the others stay idle): seconds to exit."""
    time.sleep(settle)
    out = []
    for proc in procs:
        sent = proc.signal()
        exited = proc.wait_exit(EXIT_TIMEOUT_S)
        if exited is None:
            raise RuntimeError(f"{proc.log_path}: still running {EXIT_TIMEOUT_S} s after SIGTERM")
        if proc.proc.returncode != 0:
            raise RuntimeError(f"{proc.log_path}: exit status {proc.proc.returncode} after SIGTERM")
        out.append(exited - sent)
    return out


def _daemon_latencies(bench: Bench, command: str, runs: int, batch: int) -> list[float]:
    where = bench.workdir(f"stop-{command}")
    topics = bench.topics(f"stop-{command}")
    config = bench.write_config(where, topics, group=f"stop-{command}", api={"workers": API_WORKERS})
    latencies = []
    while len(latencies) < runs:
        procs = []
        for _ in range(min(batch, runs - len(latencies))):
            env = {"UVRD_PROCESSOR_GROUP_ID": f"stop-{uuid.uuid4().hex[:8]}",
                   "UVRD_UPLOADER_GROUP_ID": f"stop-{uuid.uuid4().hex[:8]}"}
            if command == "api":
                from uvrd.broker.loopback import free_port

                port = free_port()
                env.update(UVRD_API_LISTEN=f"127.0.0.1:{port}", UVRD_API_PUBLIC_URL=f"http://127.0.0.1:{port}")
            procs.append((bench.daemon(command, config, env=env), env))
        for proc, env in procs:
            if command == "api":
                proc.wait_ready(check=_healthz(env["UVRD_API_PUBLIC_URL"]))
                # One worker answering is not an idle server: the other may still be booting.
                wait_event(proc, "api worker ready", 60, count=API_WORKERS)
            else:
                proc.wait_ready()
                wait_event(proc, "partitions assigned", 60)  # idle in its group, not still joining
        latencies += _measure([p for p, _ in procs], settle=1.0)
        for proc, _ in procs:
            bench.forget(proc)
    return latencies


def _join_latencies(bench: Bench, command: str, runs: int) -> list[float]:
    """Fresh daemons (each its own group) SIGTERMed while the broker holds their first JoinGroup:
    JOIN_SETTLE_S after READY=1, the join their first poll sent is in its round.  A run counts
    only if the daemon says it stopped in the middle of the round (so sent no LeaveGroup)."""
    where = bench.workdir(f"join-{command}")
    topics = bench.topics(f"join-{command}")
    config = bench.write_config(where, topics, group=f"join-{command}")
    latencies = []
    for _ in range(runs):
        proc = bench.daemon(command, config, env={"UVRD_PROCESSOR_GROUP_ID": f"join-{uuid.uuid4().hex[:8]}",
                                                  "UVRD_UPLOADER_GROUP_ID": f"join-{uuid.uuid4().hex[:8]}"})
        ready = proc.wait_ready()
        time.sleep(max(0.0, ready + JOIN_SETTLE_S - time.monotonic()))
        [latency] = _measure([proc], settle=0.0)
        if proc.events(group_leave.MID_ROUND) and not proc.events("partitions assigned"):
            latencies.append(latency)
        bench.forget(proc)
    return latencies


def _oldway_latencies(bench: Bench, runs: int, idle_wait: float) -> dict:
    """Start *runs* old-style consumers (each its own topic and group), SIGTERM them all, wait
    *idle_wait*; then send each its next message and time its exit."""
    where = bench.workdir("stop-oldway")
    names = [f"oldway-{uuid.uuid4().hex[:8]}" for _ in range(runs)]
    admin = KafkaAdminClient(bootstrap_servers=bench.bootstrap)
    try:
        admin.create_topics([NewTopic(n, 1, 1) for n in names])
    finally:
        admin.close()
    procs = []
    for name in names:
        ready = where / f"{name}.ready"
        proc = bench.script([str(Path(__file__).with_name("oldway.py")), "--bootstrap", bench.bootstrap,
                             "--topic", name, "--group", name, "--ready-file", str(ready)], where, name)
        procs.append((proc, name, ready))
    for proc, _, ready in procs:
        proc.wait_ready(120, check=ready.exists)
    time.sleep(1.0)
    sent = [proc.signal() for proc, _, _ in procs]
    time.sleep(idle_wait)
    by_itself = sum(1 for proc, _, _ in procs if proc.wait_exit(0) is not None)
    after_message, total = [], []
    for (proc, name, _), t_sig in zip(procs, sent):
        if proc.wait_exit(0) is None:
            t_msg = time.monotonic()
            bench.producer.send(name, b"next").get(10)
            exited = proc.wait_exit(EXIT_TIMEOUT_S)
            if exited is None:
                raise RuntimeError(f"old-way consumer {name} did not exit after its next message")
            after_message.append(exited - t_msg)
            total.append(exited - t_sig)
        bench.forget(proc)
    return {"exited_by_itself": by_itself, "after_message": after_message, "total": total}


def run(bench: Bench, runs: int, quick: bool) -> dict:
    batch = 4 if not quick else 2
    idle_wait = 10.0 if not quick else 2.0
    data = {}
    for command in ("processor", "uploader", "api"):
        say(f"stop latency: {runs} idle {command}s")
        data[command] = _daemon_latencies(bench, command, runs, batch if command == "processor" else 10)
    joins = {}
    join_runs = max(2, runs // 4)
    for command in ("processor", "uploader"):
        say(f"stop latency: {join_runs} {command}s during their first join")
        joins[command] = _join_latencies(bench, command, join_runs)
    say(f"stop latency: {runs} old-way consumers")
    old = _oldway_latencies(bench, runs, idle_wait)

    rows = []
    for command, xs in data.items():
        rows.append([f"uvrd {command}", f"{median(xs) * 1000:.0f} ms", f"{pct(xs, 0.9) * 1000:.0f} ms",
                     f"{max_or_nan(xs) * 1000:.0f} ms", f"{len(xs)}/{runs}"])
    for command, xs in joins.items():
        rows.append([f"uvrd {command}, first join", f"{median(xs) * 1000:.0f} ms", f"{pct(xs, 0.9) * 1000:.0f} ms",
                     f"{max_or_nan(xs) * 1000:.0f} ms", f"{len(xs)}/{join_runs} caught joining"])
    rows.append(["old loop, idle topic", f"never (> {idle_wait:g} s)", "", "",
                 f"{old['exited_by_itself']}/{runs}"])
    rows.append(["old loop, from its next message", f"{median(old['after_message']) * 1000:.0f} ms",
                 f"{pct(old['after_message'], 0.9) * 1000:.0f} ms", f"{max_or_nan(old['after_message']) * 1000:.0f} ms",
                 "after the message"])
    figure = _plot(bench, data, old, idle_wait)
    return {
        "key": "stop_latency",
        "title": "1. Stop latency, idle",
        "intro": (f"SIGTERM to process exit of an idle daemon (ready, partitions assigned, no work), "
                  f"{runs} fresh daemons each, and of {join_runs} fresh processors and uploaders each "
                  f"{JOIN_SETTLE_S:g} s after READY=1, while the broker held their first JoinGroup (counted "
                  f"only when the daemon logged that it stopped in the middle of the round); the old design's "
                  f"`for message in consumer:` loop with a signal flag, on an idle topic, was given "
                  f"{idle_wait:g} s, then sent one message."),
        "header": ["daemon", "median", "p90", "max", "exited on its own"],
        "rows": rows,
        "figures": [figure] if figure else [],
        "data": {"uvrd": data, "first_join": joins, "oldway": old},
        "summary": [(f"idle {c}: SIGTERM to exit, median / max ({len(xs)} runs)",
                     f"{median(xs) * 1000:.0f} ms / {max_or_nan(xs) * 1000:.0f} ms") for c, xs in data.items()]
        + [(f"{c} during its first join: SIGTERM to exit, median / max ({len(xs)} runs)",
            f"{median(xs) * 1000:.0f} ms / {max_or_nan(xs) * 1000:.0f} ms") for c, xs in joins.items()]
        + [("old `for message in consumer:` loop, idle topic",
            f"{runs - old['exited_by_itself']}/{runs} still running after {idle_wait:g} s; "
            f"exits {median(old['after_message']) * 1000:.0f} ms (median) after the next message")],
    }


def _plot(bench: Bench, data: dict, old: dict, idle_wait: float):
    from .report import plt, save_figure

    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    labels = [f"uvrd {c}" for c in data] + ["old loop\n(after next msg)"]
    series = [[x * 1000 for x in xs] for xs in data.values()] + [[x * 1000 for x in old["after_message"]]]
    ax.boxplot(series, showfliers=True)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    for i, xs in enumerate(series, 1):
        ax.scatter([i] * len(xs), xs, s=8, alpha=0.5)
    ax.axhline(idle_wait * 1000, color="red", linestyle="--", linewidth=1)
    ax.text(0.6, idle_wait * 1000 * 1.08, f"old loop on an idle topic: still running after {idle_wait:g} s",
            color="red", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=idle_wait * 1000 * 2)
    ax.set_ylabel("SIGTERM → exit (ms)")
    ax.set_title("Stop latency of an idle daemon")
    return save_figure(fig, "stop_latency.png")


if __name__ == "__main__":
    sys.exit("run through: python -m bench")
