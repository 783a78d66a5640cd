"""``python -m bench [--quick] [--only 1,3] [--out DIR]``: run the benchmarks, write DIR/bench.md."""

from __future__ import annotations

import argparse
import datetime
import sys
import time
import traceback
from pathlib import Path

from . import (amortisation, busy_share, busy_spleeter, drain, first_task, gpu, overhead, pipeline_memory, real_weights,
               report, scaling, single_host, stop_latency)
from .harness import Bench, say

# Sizes: sections 1-9 fit in 25 minutes on a 2-core machine without an accelerator; 10 takes about 15 more,
# 11 from 3 (a quiet machine) to 10 (a loaded one), 12 about 5 to 8 (docs/bench.md).
FULL = {"stop_runs": 20, "drain_runs": 8, "overhead_tasks": 12, "overhead_batches": 3, "amort_n": (1, 10, 50),
        "amort_repeats": 6, "amort_cli_runs": 4, "scale_tasks": 16, "scale_repeats": 2, "scale_max": 4, "realistic_seconds": 8,
        "real_files": 10, "real_repeats": 2, "real_long_s": 60, "first_tasks": 6, "first_used_repeats": 2,
        "single_host_alone": 10, "busy_tasks": 20, "busy_audio_s": 180, "busy_s_per_audio_s": busy_share.S_PER_AUDIO_S, "spleeter_tasks": 6, "spleeter_audio_s": 30,
        "spleeter_rounds": 2, "memory_long_s": 7200}
QUICK = {"stop_runs": 2, "drain_runs": 2, "overhead_tasks": 4, "overhead_batches": 2, "amort_n": (1, 3),
         "amort_repeats": 2, "amort_cli_runs": 2, "scale_tasks": 4, "scale_repeats": 2, "scale_max": 2, "realistic_seconds": 4,
         "real_files": 2, "real_repeats": 1, "real_long_s": 12, "first_tasks": 3, "first_used_repeats": 1,
         "single_host_alone": 2, "busy_tasks": 3, "busy_audio_s": 20, "busy_s_per_audio_s": busy_share.S_PER_AUDIO_S, "spleeter_tasks": 2, "spleeter_audio_s": 5,
         "spleeter_rounds": 1, "memory_long_s": 120, "memory_chunk_s": 20}
# Options that change a size: (option, sizes key, type, help).
SIZE_OPTIONS = [
    ("--busy-tasks", "busy_tasks", int, "benchmark 10's number of tasks (20)"),
    ("--busy-audio-s", "busy_audio_s", float, "benchmark 10's seconds of audio per task (180)"),
    ("--busy-s-per-audio-s", "busy_s_per_audio_s", float,
     f"benchmark 10's stand-in forward, in seconds per second of audio ({busy_share.S_PER_AUDIO_S:g})"),
    ("--spleeter-tasks", "spleeter_tasks", int, "benchmark 11's number of tasks (6)"),
    ("--spleeter-audio-s", "spleeter_audio_s", float, "benchmark 11's seconds of audio per task (30)"),
    ("--spleeter-rounds", "spleeter_rounds", int, "benchmark 11's runs of each processor, taking turns (2)"),
    ("--memory-long-s", "memory_long_s", float, "benchmark 12's long input, in seconds (7200)"),
]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check that every benchmark runs")
    p.add_argument("--only", default="", help="comma-separated benchmark numbers (1-12)")
    p.add_argument("--out", type=Path, default=Path("docs"), help="where bench.md and bench/*.png go")
    for option, key, kind, text in SIZE_OPTIONS:
        p.add_argument(option, dest=key, type=kind, help=text)
    args = p.parse_args(argv)
    sizes = dict(QUICK if args.quick else FULL)
    resized = {key: getattr(args, key) for _, key, _, _ in SIZE_OPTIONS if getattr(args, key)}
    sizes.update(resized)
    only = {int(x) for x in args.only.split(",") if x.strip()} or set(range(1, 13))
    report.configure(args.out)
    started_wall = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    machine = report.machine()
    command = "make bench" if not (args.quick or args.only or resized or args.out != Path("docs")) else \
        "python -m bench " + " ".join(a for a in (argv if argv is not None else sys.argv[1:]))
    bench = Bench()
    say(f"workspace {bench.root}, broker {bench.bootstrap}")
    sections, failed = [], []
    shared: dict = {}
    plan = [
        (1, lambda: stop_latency.run(bench, sizes["stop_runs"], args.quick)),
        (2, lambda: drain.run(bench, sizes["drain_runs"], args.quick)),
        (3, lambda: overhead.run(bench, sizes, shared)),
        (4, lambda: amortisation.run(bench, sizes, shared)),
        (5, lambda: scaling.run(bench, sizes)),
        (6, lambda: gpu.run(bench, sizes, shared)),
        (7, lambda: real_weights.run(bench, sizes, shared)),
        (9, lambda: single_host.run(bench, sizes)),
        (10, lambda: busy_share.run(bench, sizes)),
        (11, lambda: busy_spleeter.run(bench, sizes)),
        (12, lambda: pipeline_memory.run(bench, sizes)),
        # Last: its processors' fresh-install starts would weigh on the start-up figures of the others.
        (8, lambda: first_task.run(bench, sizes)),
    ]
    try:
        for number, step in plan:
            if number not in only:
                continue
            t = time.monotonic()
            try:
                section = step()
            except Exception as e:
                traceback.print_exc()
                failed.append(number)
                section = {"key": f"failed_{number}", "title": f"{number}. (failed)",
                           "intro": f"This benchmark failed in this run: `{type(e).__name__}: {e}`"}
            section.setdefault("notes", []).append(f"_This benchmark took {time.monotonic() - t:.0f} s._")
            sections.append(section)
            say(f"benchmark {number} done in {time.monotonic() - t:.0f} s")
    finally:
        bench.close()
    out = report.write(sections, machine, command, started_wall, time.monotonic() - started, args.quick)
    say(f"wrote {out} in {(time.monotonic() - started) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
