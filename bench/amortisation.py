"""4. Model-load amortisation: N files through uvrd, through the ``audio-separator`` CLI run once per
file (the model loaded each time) and through one in-process ``Separator`` looping over the files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from devtools import tinymodel

from .harness import Bench, Finished, iso_epoch, median, say, take_turns
from .realistic import run_inprocess

# Long enough that a file's separation (about 0.7 s here) dwarfs the few hundred milliseconds a
# 2-core machine's jitter adds or takes from a run; the per-task costs are in benchmark 3.
AUDIO_S = 8


def _cli(bench: Bench, audio: Path, runs: int) -> list[float]:
    exe = Path(sys.executable).with_name("audio-separator")
    out = bench.workdir("amort-cli")
    times = []
    for _ in range(runs):
        t = time.monotonic()
        run = subprocess.run([str(exe), str(audio), "-m", tinymodel.TINY_MODEL, "--model_file_dir", str(bench.model_dir),
                              "--output_dir", str(out), "--output_format", "WAV",
                              "--mdx_segment_size", str(tinymodel.SEGMENT_SIZE),
                              "--mdx_hop_length", str(tinymodel.HOP_LENGTH), "--log_level", "warning"],
                             capture_output=True, text=True, env={**bench._env(), "TQDM_DISABLE": "1"}, timeout=300)
        times.append(time.monotonic() - t)
        if run.returncode != 0:
            raise RuntimeError(f"audio-separator failed: {run.stderr[-2000:]}")
    return times


def _burst_journal(proc, since_wall: float) -> tuple[list[float], list[float]]:
    """A burst as uvrd's journal tells it: its own time per task (one `task started` to the next, less
    the engine's time for the separation between them: taking the task, storing the stems, the commit),
    and the engine's `separation_s` of each task.  Unlike the end-to-end figure, the first is not swayed
    by how fast the machine separates at the time; the second shows whether a slow run was the
    separations'."""
    events = [e for e in proc.log_events() if e.get("event") in ("task started", "task succeeded")
              and iso_epoch(e["timestamp"]) > since_wall]
    gaps = []
    for start, done, following in zip(events, events[1:], events[2:]):
        if (start["event"], done["event"], following["event"]) == ("task started", "task succeeded", "task started"):
            gaps.append(iso_epoch(following["timestamp"]) - iso_epoch(start["timestamp"]) - done["separation_s"])
    return gaps, [e["separation_s"] for e in events if e["event"] == "task succeeded"]


def run(bench: Bench, sizes: dict, shared: dict) -> dict:
    ns, repeats = sizes["amort_n"], sizes["amort_repeats"]
    audio = bench.sample(AUDIO_S)
    files = []
    for i in range(max(ns)):
        target = bench.samples / f"amort-{i}.wav"
        shutil.copyfile(audio, target)
        files.append(target)

    eos = shared.get("eos") or {}
    if not eos:
        where = bench.workdir("amort-uvrd")
        topics = bench.topics("amort-uvrd")
        proc = bench.daemon("processor", bench.write_config(where, topics, group="amort-uvrd"))
        proc.wait_ready()
        eos.update(proc=proc, topics=topics, where=where, reader=bench.results_reader(topics.results))
    proc, reader, spool = eos["proc"], eos["reader"], eos["where"] / "spool"
    # One task first: a processor that just served another benchmark's burst is idle again.
    bench.send_task(eos["topics"].tasks, bench.spool_copy(spool, audio))
    bench.flush()
    reader.wait(1, 120, proc.alive)
    reader.take()

    # Each uvrd run is compared with its partner loop (harness.take_turns).
    inproc, uvrd, pickup, between, engine_files = [], {n: [] for n in ns}, [], [], []

    def loop() -> None:
        inproc.append(run_inprocess(bench, tinymodel.TINY_MODEL, tinymodel.HOP_LENGTH, tinymodel.SEGMENT_SIZE,
                                    [files[:n] for n in ns], bench.workdir("amort-inproc"),
                                    warmup=bench.sample(1)))

    def through_uvrd() -> None:
        for n in ns:
            inputs = [bench.spool_copy(spool, audio) for _ in range(n)]
            finished = Finished([proc])
            sent_wall, t = time.time(), time.monotonic()
            for path in inputs:
                bench.send_task(eos["topics"].tasks, path)
            bench.flush()
            finished.wait(n, 600)
            results = reader.wait(n, 60, proc.alive)
            failed = [r.get("error_message") for _, r in results if not r.get("success")]
            if failed:
                raise RuntimeError(f"{len(failed)} of {n} tasks failed: {failed[0]}")
            uvrd[n].append(max(a for a, _ in results) - t)
            reader.take()
            started = [iso_epoch(e["timestamp"]) for e in proc.events("task started")]
            pickup.append(min(s for s in started if s > sent_wall) - sent_wall)
            if n == ns[-1]:
                gaps, separations = _burst_journal(proc, sent_wall)
                between.extend(gaps)
                engine_files.append(median(separations))

    take_turns(repeats, loop, through_uvrd, lambda repeat, order: (
        f"amortisation {repeat + 1}/{repeats}: a fresh in-process loop and the warm uvrd processor "
        f"(exactly-once), {order}, over N = {ns}"))
    reader.close()
    bench.forget(proc)

    cli_runs = sizes["amort_cli_runs"]
    say(f"amortisation: audio-separator CLI, {cli_runs} invocations")
    cli = _cli(bench, audio, cli_runs)
    start_ready = bench.processor_starts
    # Start-up, both sides: until the first (1 s) file is separated, one-off initialisation included.
    uvrd_first = bench.first_results
    uvrd_start = median(uvrd_first) if uvrd_first else median(start_ready)
    inproc_start = median([r["import_s"] + r["load_s"] + r["warmup_s"] for r in inproc])

    rows, summary, series = [], [], {"CLI per file": [], "in-process loop": [], "uvrd": []}
    excess_n = {}
    for i, n in enumerate(ns):
        loop_warm = median([r["loops_s"][i] for r in inproc])
        uvrd_warm = median(uvrd[n])
        cli_n = n * median(cli)
        loop_all = inproc_start + loop_warm
        uvrd_all = uvrd_start + uvrd_warm
        # Each uvrd run against the loop run beside it: a slow spell of the machine cancels out.
        excess = [(u / r["loops_s"][i] - 1) * 100 for u, r in zip(uvrd[n], inproc)]
        excess_n[n] = median(excess)
        rows.append([n, f"{cli_n:.1f} s", f"{loop_all:.1f} s", f"{uvrd_all:.1f} s",
                     f"{loop_warm:.2f} s", f"{uvrd_warm:.2f} s",
                     f"{median(excess):+.1f} % ({min(excess):+.1f} … {max(excess):+.1f})", f"{cli_n / uvrd_all:.1f}×"])
        series["CLI per file"].append(cli_n / n)
        series["in-process loop"].append(loop_all / n)
        series["uvrd"].append(uvrd_all / n)
    n = ns[-1]
    last = rows[-1]
    within = excess_n[n] <= 5.0
    summary.append((f"uvrd vs one in-process Separator loop, {n} files, model loaded (target: at most 5 % slower)",
                    f"{excess_n[n]:+.1f} % ({'met' if within else 'NOT met'})"))
    own, per_file = median(between), median([t for r in inproc for t in r["per_file_s"]])
    loop_files = [median(r["per_file_s"][-n:]) for r in inproc]  # the loop's last group is its n files
    pairs = [f"{loop:.3f} / {engine:.3f} s ({(engine / loop - 1) * 100:+.1f} %)"
             for loop, engine in zip(loop_files, engine_files)]
    notes = [f"Where each pair's difference lies, {n}-file bursts: the loop's per-file median / the engine's "
             f"`separation_s` median: {'; '.join(pairs)}. The rest of a pair's difference is uvrd's own time "
             f"between separations and the first task's hand-over."]
    summary.append((f"uvrd's own time per task between separations, from its journal ({n}-file bursts)",
                    f"{own * 1000:.1f} ms = {own / per_file * 100:.1f} % of a file's in-process separation"))
    summary.append((f"{n} files: CLI once per file / uvrd, start-up included", last[7]))
    figure = _plot(ns, series)
    return {
        "key": "amortisation",
        "title": "4. Model-load amortisation",
        "intro": (f"N files of {AUDIO_S} s through the tiny model. *In-process loop*: a fresh Python process "
                  f"that loads one `Separator` and loops over the files ({repeats} runs; start-up = import + "
                  f"model load + a first 1 s file, which pays one-off initialisation: median "
                  f"{inproc_start:.1f} s). *uvrd*: a running exactly-once processor, N tasks sent at once, time "
                  f"to the N-th result's produce time, read from the topic once the processor has logged all "
                  f"N, so that no reader polls beside the separations ({repeats} runs, taking turns with the "
                  f"loop in the order loop, uvrd, uvrd, loop, ...). Every uvrd run includes the broker's hand-over of the first "
                  f"task (send → the processor's `task started`: median {median(pickup) * 1000:.0f} ms, max "
                  f"{max(pickup) * 1000:.0f} ms), which weighs most at N = 1. Between two separations of a burst, "
                  f"uvrd's own work (the commit, storing the stems, taking the next task: `task started` to the "
                  f"next, less the engine's `separation_s`) took a median {own * 1000:.1f} ms over "
                  f"{len(between)} tasks. The rest of the difference is the separations' own speed, which "
                  f"wanders on a shared machine: the loop's per-file median ranged {min(loop_files):.3f} … "
                  f"{max(loop_files):.3f} s over its runs. Its "
                  f"start-up is exec to the committed result "
                  f"of a 1 s task queued before the start (median of {len(uvrd_first)} processors: "
                  f"{uvrd_start:.1f} s; exec to READY=1 alone: median {median(start_ready):.1f} s over the "
                  f"{len(start_ready)} processors this run waited for). *CLI*: `audio-separator` once per "
                  f"file, model reloaded each time; {cli_runs} invocations measured (median "
                  f"{median(cli):.1f} s each), N files = N × that median (every invocation repeats the same "
                  f"start, load and separation)."),
        "header": ["N", "CLI per file", "in-process loop, incl. start", "uvrd, incl. start",
                   "in-process loop, loaded", "uvrd, loaded",
                   "uvrd vs loop, loaded: median of the paired runs (range)", "CLI / uvrd"],
        "rows": rows,
        "notes": notes,
        "figures": [figure] if figure else [],
        "summary": summary,
        "data": {"inprocess": inproc, "uvrd": uvrd, "pickup": pickup, "between_separations": between,
                 "engine_separation_s": engine_files, "cli": cli,
                 "uvrd_ready": start_ready, "uvrd_first_result": uvrd_first},
    }


def _plot(ns, series):
    from .report import plt, save_figure

    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, ys in series.items():
        ax.plot(ns, ys, marker="o", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.minorticks_off()
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("files (N)")
    ax.set_ylabel("seconds per file, start-up included")
    ax.set_title("Model-load amortisation")
    ax.legend()
    return save_figure(fig, "amortisation.png")
