"""5. Scaling: 1, 2 and 4 processors in one group on one task topic (partitions >= processors):
throughput, and how long a rebalance takes when a processor joins or leaves."""

from __future__ import annotations

import time

from .harness import Bench, Finished, iso_epoch, max_or_nan, median, say, wait_event

AUDIO_S = 3
BUSY_AUDIO_S = 150  # a job of about 10 s here, longer than a rebalance


def _wall(mono: float) -> float:
    return mono + (time.time() - time.monotonic())


def _settled(members, since_wall: float, timeout: float = 120) -> float:
    """Wait until every member logged 'partitions assigned' after *since_wall*; the last such time (wall)."""
    deadline = time.monotonic() + timeout
    while True:
        last = []
        for proc in members:
            stamps = [iso_epoch(e["timestamp"]) for e in proc.events("partitions assigned")
                      if iso_epoch(e["timestamp"]) > since_wall]
            last.append(max(stamps) if stamps else None)
        if all(s is not None for s in last):
            time.sleep(0.5)  # a member that rejoins once more would log again: take its latest
            again = [max(iso_epoch(e["timestamp"]) for e in p.events("partitions assigned")) for p in members]
            return max(again)
        if time.monotonic() > deadline:
            raise RuntimeError("the group did not settle")
        time.sleep(0.1)


def run(bench: Bench, sizes: dict) -> dict:
    top, tasks, repeats = sizes["scale_max"], sizes["scale_tasks"], sizes["scale_repeats"]
    counts = [k for k in (1, 2, 4) if k <= top]
    where = bench.workdir("scaling")
    topics = bench.topics("scaling", partitions=top)
    config = bench.write_config(where, topics, group="scaling")
    audio = bench.sample(AUDIO_S)
    reader = bench.results_reader(topics.results)
    members, joins, leaves, rates = [], [], [], {}

    def burst(n):
        inputs = [bench.spool_copy(where / "spool", audio) for _ in range(n)]
        finished = Finished(members)
        t = time.monotonic()
        for i, path in enumerate(inputs):
            bench.send_task(topics.tasks, path, partition=i % top)
        bench.flush()
        finished.wait(n, 600)
        arrivals = [a for a, _ in reader.wait(n, 60)]
        reader.take()
        return n / (max(arrivals) - t)

    busy_joins = []
    while len(members) < top:
        busy = len(members) == 1
        if busy:
            # The second processor joins while the first separates: the join a worker in a job must
            # take part in without leaving its job.
            bench.send_task(topics.tasks, bench.spool_copy(where / "spool", bench.sample(BUSY_AUDIO_S)), partition=0)
            bench.flush()
            wait_event(members[0], "task started", 60)
        proc = bench.daemon("processor", config)
        ready = proc.wait_ready()
        members.append(proc)
        done = _settled(members, _wall(ready))
        if busy:
            busy_joins.append(done - _wall(ready))
            reader.wait(1, 600)
            reader.take()
        elif len(members) > 1:
            joins.append(done - _wall(ready))
        if len(members) in counts:
            burst(len(members))  # warm-up: every member has fetched once
            say(f"scaling: {len(members)} processor(s), {repeats} x {tasks} tasks")
            rates[len(members)] = [burst(tasks) for _ in range(repeats)]
    while len(members) > 1:
        proc = members.pop()
        sent = proc.signal()
        proc.wait_exit(60)
        done = _settled(members, _wall(sent))
        leaves.append(done - _wall(sent))
        bench.forget(proc)
    reader.close()
    for proc in members:
        bench.forget(proc)

    base = median(rates[1])
    rows = [[k, f"{median(xs):.2f}", f"{min(xs):.2f}–{max(xs):.2f}", f"{median(xs) / base:.2f}×"]
            for k, xs in rates.items()]
    notes = [f"Rebalance when a processor joins an idle group (its READY=1 to the last member's new "
             f"assignment): median {median(joins):.2f} s, max {max_or_nan(joins):.2f} s ({len(joins)} joins); when the "
             f"second joins while the first is in a {BUSY_AUDIO_S} s job: {_seconds(busy_joins)}. When one "
             f"leaves (SIGTERM to the last remaining member's new assignment): median {median(leaves):.2f} s, "
             f"max {max_or_nan(leaves):.2f} s ({len(leaves)} leaves). kafka-python's eager protocol: every member gives "
             "up its partitions and rejoins; a job in flight keeps its partition paused meanwhile. Most of each "
             "figure is the broker's: members learn of a rebalance from their next heartbeat (every 1 s here), "
             "and Tansu holds each JoinGroup round open for 3 s.",
             f"This machine has {__import__('os').cpu_count()} cores: separations are CPU-bound here, so "
             "throughput cannot grow past the core count (one processor per GPU in production)."]
    figure = _plot(rates, {"join": joins, "join\nduring a job": busy_joins, "leave": leaves})
    return {
        "key": "scaling",
        "title": "5. Scaling",
        "intro": (f"Processors in one group on a task topic with {top} partitions; per size, {repeats} bursts "
                  f"of {tasks} tasks of {AUDIO_S} s (tiny model), spread evenly over the partitions; throughput "
                  f"= tasks / (send → last committed result)."),
        "header": ["processors", "tasks/s (median)", "range", "vs 1"],
        "rows": rows,
        "notes": notes,
        "figures": [figure] if figure else [],
        "summary": [(f"throughput with {k} processors vs 1", f"{median(xs) / base:.2f}×") for k, xs in rates.items()
                    if k > 1] + [("rebalance: join / join during a job / leave, median",
                                  f"{median(joins):.2f} s / {_seconds(busy_joins)} / {median(leaves):.2f} s")],
        "data": {"rates": rates, "joins": joins, "busy_joins": busy_joins, "leaves": leaves},
    }


def _seconds(xs) -> str:
    return " / ".join(f"{x:.2f} s" for x in xs) if xs else "not measured"


def _plot(rates, kinds: dict):
    from .report import plt, save_figure

    if plt is None:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2))
    ks = list(rates)
    a.plot(ks, [median(rates[k]) for k in ks], marker="o")
    for k in ks:
        a.scatter([k] * len(rates[k]), rates[k], color="black", s=10)
    a.set_xticks(ks)
    a.set_xlabel("processors")
    a.set_ylabel("tasks per second")
    a.set_title("Throughput")
    b.boxplot(list(kinds.values()))
    b.set_xticks(range(1, len(kinds) + 1), list(kinds))
    b.set_ylabel("seconds")
    b.set_title("Rebalance time")
    return save_figure(fig, "scaling.png")
