"""8. The first task after a start against the warm ones after it: each task's own time in the engine
child (the processor's ``separation_s``), task 1 against the median of tasks 2..N, on a fresh install
(an empty numba cache) and a used one, before the warm-up and after it.

*Before*: uvrd's engine as it was, ready once its model is loaded (``EngineSettings.warm_up`` off),
driven by engine_tasks.py.  *After*: the processor as shipped, READY=1 only after its warm-up, the
figures read from its journal.  Both are the same measure, the engine child's time around one job's
separation.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from uvrd.processor import engine_warmup

from .harness import ROOT, Bench, Finished, median, say

# About 0.7 s of separation here: long enough that the 2-core machine's jitter does not decide a
# task's figure, short enough for the fresh-install runs' one-off cost to show as it is.
AUDIO_S = 8


def _before(bench: Bench, numba_cache: Path, audio: Path, tasks: int) -> dict:
    # As a module from the checkout's root, as the bench's daemons run: devtools is not installed.
    run = subprocess.run([sys.executable, "-m", "bench.engine_tasks", str(bench.model_dir),
                          str(bench.workdir("first-before")), str(audio), str(tasks)],
                         capture_output=True, text=True, timeout=900, cwd=ROOT,
                         env=bench._env({"NUMBA_CACHE_DIR": str(numba_cache)}))
    if run.returncode != 0:
        raise RuntimeError(f"the engine's tasks failed ({run.returncode}): {run.stderr[-2000:]}")
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "warmup_s": None}


def _after(bench: Bench, numba_cache: Path, audio: Path, tasks: int) -> dict:
    where = bench.workdir("first-after")
    topics = bench.topics("first-after")
    proc = bench.daemon("processor", bench.write_config(where, topics, group=where.name),
                        env={"NUMBA_CACHE_DIR": str(numba_cache)})
    try:
        proc.wait_ready(600)
        inputs = [bench.spool_copy(where / "spool", audio) for _ in range(tasks)]
        finished = Finished([proc])
        for path in inputs:
            bench.send_task(topics.tasks, path)
        bench.flush()
        finished.wait(tasks, 600)
        failed = proc.events("task failed")
        if failed:
            raise RuntimeError(f"a task failed: {failed[0].get('error')}")
        [ready] = proc.events("engine ready")  # the parent's: engine start to ready, warm-up included
        return {"ready_s": ready["load_s"], "warmup_s": ready["warmup_s"],
                "seconds": [e["separation_s"] for e in proc.events("task succeeded")]}
    finally:
        bench.forget(proc)


def _ratio(run: dict) -> float:
    return run["seconds"][0] / median(run["seconds"][1:])


def run(bench: Bench, sizes: dict) -> dict:
    tasks, repeats = sizes["first_tasks"], sizes["first_used_repeats"]
    audio = bench.sample(AUDIO_S)
    used_cache = bench.root / "numba-before"  # filled by the fresh install's first run, used after it
    runs = {("fresh", "before"): [], ("fresh", "after"): [], ("used", "before"): [], ("used", "after"): []}
    say(f"first task: a fresh install (empty numba cache), before and after the warm-up, {tasks} tasks of "
        f"{AUDIO_S} s each")
    runs["fresh", "before"].append(_before(bench, used_cache, audio, tasks))
    runs["fresh", "after"].append(_after(bench, bench.root / "numba-after", audio, tasks))
    for repeat in range(repeats):
        say(f"first task: a used install (numba cache kept), run {repeat + 1}/{repeats}")
        order = ("before", "after") if repeat % 2 == 0 else ("after", "before")
        for side in order:
            runs["used", side].append((_before if side == "before" else _after)(bench, used_cache, audio, tasks))

    rows, ratios = [], {}
    for (install, side), done in runs.items():
        ratios[install, side] = median([_ratio(r) for r in done])
        first = median([r["seconds"][0] for r in done])
        warm = median([median(r["seconds"][1:]) for r in done])
        ready = median([r["ready_s"] for r in done])
        warmups = [r["warmup_s"] for r in done if r["warmup_s"] is not None]
        rows.append([f"{install} install", "after: warm-up before ready" if side == "after" else "before: none",
                     f"{ready:.1f} s" + (f" (warm-up {median(warmups):.1f} s)" if warmups else ""),
                     f"{first:.2f} s", f"{warm:.2f} s", f"{ratios[install, side]:.2f}×", f"{ready + first:.1f} s"])
    summary = [(f"first task / warm task, {install} install{' (empty numba cache)' if install == 'fresh' else ''}",
                f"{ratios[install, 'before']:.2f}× before the warm-up, {ratios[install, 'after']:.2f}× after")
               for install in ("fresh", "used")]
    return {
        "key": "first_task",
        "title": "8. First task after a start",
        "intro": (f"{tasks} tasks of {AUDIO_S} s through the tiny model, one at a time, on a freshly started engine; "
                  f"each task's own time in the engine child (the processor's `separation_s`), task 1 against the "
                  f"median of tasks 2..{tasks}. *Fresh install*: an empty numba cache (`NUMBA_CACHE_DIR`), as "
                  f"after installing the package; *used install*: the cache the fresh run left "
                  f"({repeats} run{'s' if repeats > 1 else ''} each side, medians). *Before*: uvrd's engine as it "
                  f"was, ready once its model is loaded (`EngineSettings.warm_up` off), driven by a script. *After*: "
                  f"the processor as shipped, READY=1 only after its engine separated a "
                  f"{engine_warmup.CLIP_SECONDS:g} s clip, figures from its "
                  f"journal. *Ready* is the engine's start to its ready message (the model's load, plus the "
                  f"warm-up after), the last column that plus task 1: when a task queued at the start is done. "
                  f"The warm-up moves the one-off cost before READY; it does not take it away."),
        "header": ["install", "warm-up", "engine ready after", "task 1", f"tasks 2..{tasks} (median)",
                   "task 1 / warm", "ready + task 1"],
        "rows": rows,
        "summary": summary,
        "data": {f"{install}_{side}": done for (install, side), done in runs.items()},
    }
