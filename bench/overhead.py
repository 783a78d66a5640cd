"""3. Per-task overhead: tasks per second of one processor on a near-zero-cost separation (the tiny
model on 1 s of audio) under exactly-once and at-least-once, against the old design's auto-commit
loop; and that overhead as a share of a realistic separation's time (realistic.py)."""

from __future__ import annotations

from pathlib import Path

from devtools import tinymodel

from . import realistic
from .harness import Bench, median, say

AUDIO_S = 1


def _throughput(bench: Bench, alive, topic: str, reader, spool: Path, audio: Path, tasks: int,
                batches: int) -> list[float]:
    """Batches of *tasks* tasks sent at once; per batch, tasks per second between the first and
    the last result (the first task's pick-up latency left out)."""
    rates = []
    for _ in range(batches):
        for _ in range(tasks):
            bench.send_task(topic, bench.spool_copy(spool, audio))
        bench.flush()
        arrivals = [t for t, _ in reader.wait(tasks, 600, alive)]
        reader.take()
        rates.append((tasks - 1) / (max(arrivals) - min(arrivals)))
    return rates


def start_with_first_task(bench: Bench, start, topic: str, reader, spool: Path, audio: Path):
    """A task is queued, then the worker started: seconds from exec to that task's result (the start-up
    as a user sees it: imports, model load, Kafka, the group join and the first, slower separation)."""
    bench.send_task(topic, bench.spool_copy(spool, audio))
    bench.flush()
    proc = start()
    reader.wait(1, 600, proc.alive)
    arrived = reader.take()[0][0]
    return proc, arrived - proc.started


def _uvrd(bench: Bench, commit: str, tasks: int, batches: int, audio: Path, keep: dict | None):
    where = bench.workdir(f"overhead-{commit}")
    topics = bench.topics(f"overhead-{commit}")
    config = bench.write_config(where, topics, group=f"overhead-{commit}", processor={"commit": commit})
    reader = bench.results_reader(topics.results)
    proc, first = start_with_first_task(bench, lambda: bench.daemon("processor", config), topics.tasks, reader,
                                        where / "spool", audio)
    bench.first_results.append(first)
    rates = _throughput(bench, proc.alive, topics.tasks, reader, where / "spool", audio, tasks, batches)
    if keep is not None:  # the exactly-once processor serves the model-load benchmark next
        keep.update(proc=proc, topics=topics, where=where, reader=reader)
    else:
        reader.close()
        bench.forget(proc)
    return rates


def _oldway(bench: Bench, tasks: int, batches: int, audio: Path):
    where = bench.workdir("overhead-oldway")
    topics = bench.topics("overhead-oldway")
    ready = where / "ready"
    reader = bench.results_reader(topics.results)
    proc, _ = start_with_first_task(bench, lambda: bench.script([str(Path(__file__).with_name("oldway.py")), "--bootstrap", bench.bootstrap,
                         "--topic", topics.tasks, "--group", "overhead-oldway", "--ready-file", str(ready),
                         "--separate", "--results", topics.results, "--model-dir", str(bench.model_dir),
                         "--model", tinymodel.TINY_MODEL, "--hop", str(tinymodel.HOP_LENGTH),
                         "--segment", str(tinymodel.SEGMENT_SIZE), "--output-dir", str(where / "output")],
                        where, "oldway"), topics.tasks, reader, where / "spool", audio)
    try:
        return _throughput(bench, proc.alive, topics.tasks, reader, where / "spool", audio, tasks, batches)
    finally:
        reader.close()
        bench.forget(proc)


def run(bench: Bench, sizes: dict, shared: dict) -> dict:
    tasks, batches = sizes["overhead_tasks"], sizes["overhead_batches"]
    audio = bench.sample(AUDIO_S)
    rates = {}
    say(f"overhead: old auto-commit loop, {batches} x {tasks} tasks")
    rates["old loop (auto-commit)"] = _oldway(bench, tasks, batches, audio)
    say(f"overhead: processor at-least-once, {batches} x {tasks} tasks")
    rates["uvrd at-least-once"] = _uvrd(bench, "at-least-once", tasks, batches, audio, None)
    say(f"overhead: processor exactly-once, {batches} x {tasks} tasks")
    shared["eos"] = {}
    rates["uvrd exactly-once"] = _uvrd(bench, "exactly-once", tasks, batches, audio, shared["eos"])
    real = shared.get("realistic") or realistic.measure(bench, sizes, shared)

    base = 1 / median(rates["old loop (auto-commit)"])
    rows, summary = [], []
    for name, xs in rates.items():
        per_task = 1 / median(xs)
        extra = per_task - base
        share = extra / real["song_s"] * 100
        rows.append([name, f"{median(xs):.2f}", f"{min(xs):.2f}–{max(xs):.2f}", f"{per_task * 1000:.0f} ms",
                     "—" if name.startswith("old") else f"{extra * 1000:+.0f} ms",
                     "—" if name.startswith("old") else f"{share:+.2f} %"])
        if not name.startswith("old"):
            summary.append((f"{name}: per-task overhead over the old loop, as % of a realistic separation",
                            f"{extra * 1000:+.0f} ms = {share:+.2f} % of {real['song_s']:.0f} s"))
    figure = _plot(rates)
    return {
        "key": "overhead",
        "title": "3. Per-task overhead",
        "intro": (f"One worker, tasks of {AUDIO_S} s of audio through the tiny model (a near-zero-cost "
                  f"separation), {batches} batches of {tasks} tasks sent at once; a batch's rate is "
                  f"(tasks − 1) / (last result − first result), by the results' produce times (read "
                  f"`read_committed`, so only committed ones count). The old loop "
                  f"separates in process and produces its result with auto-commit on (bench/oldway.py). "
                  f"Realistic separation: {real['describe']}."),
        "header": ["worker", "tasks/s (median)", "range", "time per task", "extra per task", "extra, % of a realistic separation"],
        "rows": rows,
        "figures": [figure] if figure else [],
        "summary": summary,
        "data": {"rates": rates, "realistic": real},
    }


def _plot(rates):
    from .report import plt, save_figure

    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = list(rates)
    ax.barh(names, [median(rates[n]) for n in names], color=["grey", "tab:blue", "tab:orange"][:len(names)])
    for i, n in enumerate(names):
        ax.scatter(rates[n], [i] * len(rates[n]), color="black", s=10, zorder=3)
    ax.set_xlabel("tasks per second (bars: median; dots: batches)")
    ax.set_title("Per-task throughput on a near-zero-cost separation")
    return save_figure(fig, "overhead.png")
