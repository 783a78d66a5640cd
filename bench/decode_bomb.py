"""The processor's peak memory on a decode bomb: ``python -m bench.decode_bomb [--hours 1] [--limit 60]``.

The bomb is an hour of 8 kHz mono silence in an M4A (about 1 MB) whose headers claim 1 s.  One
processor (tiny model, CPU) gets it as a task with ``max_audio_seconds = --limit``; another gets a WAV
just under the limit, for comparison with what a legitimate input of that length costs.  Reported: the
engine child's and the worker's peak RSS (VmHWM in /proc/<pid>/status, sampled every 0.2 s during
each task, since a killed child takes its figure with it), and each task's outcome.  Not part of
``make bench``: building the bomb alone takes about 10 s, and an unbounded decode (a build before
the fix) takes minutes and gigabytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from pathlib import Path

from devtools import crafted_audio, tinymodel
from devtools.children import peak_rss_mb

from .harness import Bench, say, wait_event


def _run_task(bench: Bench, proc, topics, spool: Path, audio: Path, timeout: float) -> dict:
    """Send one task and sample both processes' VmHWM until its result; the result and peaks."""
    reader = bench.results_reader(topics.results)
    target = spool / f"{uuid.uuid4()}{audio.suffix}"
    target.write_bytes(audio.read_bytes())
    task_uuid = bench.send_task(topics.tasks, target)
    bench.flush()
    peaks = {"engine": 0.0, "worker": 0.0}
    started = time.monotonic()
    while True:
        engine = wait_event(proc, "engine starting", 30)[-1]["pid"]
        for name, pid in (("engine", engine), ("worker", proc.proc.pid)):
            peaks[name] = max(peaks[name], peak_rss_mb(pid) or 0.0)
        reader.poll(200)
        done = [r for _, r in reader.seen if r.get("task_uuid") == task_uuid]
        if done:
            break
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"no result for {audio.name} within {timeout} s")
    reader.close()
    result = done[0]
    return {"file": audio.name, "bytes": audio.stat().st_size,
            "seconds_to_result": round(time.monotonic() - started, 1),
            "success": result["success"], "error": result.get("error_message"),
            "engine_vmhwm_mb": round(peaks["engine"]), "worker_vmhwm_mb": round(peaks["worker"])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.decode_bomb", description=__doc__)
    p.add_argument("--hours", type=float, default=1.0, help="how much silence the bomb holds")
    p.add_argument("--limit", type=float, default=60.0, help="processor.max_audio_seconds")
    p.add_argument("--job-timeout", type=float, default=600.0, help="processor.job_timeout")
    p.add_argument("--bomb-only", action="store_true", help="skip the file just under the limit")
    args = p.parse_args(argv)
    bench = Bench()
    try:
        where = bench.workdir("bomb")
        say(f"building the bomb: {args.hours:g} h of silence claiming 1 s")
        bomb = crafted_audio.lying_m4a(where / "bomb.m4a", args.hours * 3600, claims=1, rate=8000, channels=1,
                                       source="silence")
        files = [bomb] if args.bomb_only else [bomb, tinymodel.write_sample(where / "under.wav",
                                                                             seconds=max(1.0, args.limit - 1))]
        rows = []
        for audio in files:  # each in a processor of its own: VmHWM is a peak over the process's life
            topics = bench.topics("bomb")
            config = bench.write_config(where, topics, group=f"bomb-{uuid.uuid4().hex[:8]}",
                                        processor={"max_audio_seconds": args.limit, "job_timeout": args.job_timeout,
                                                   "job_retries": 0})
            proc = bench.daemon("processor", config)
            proc.wait_ready()
            engine = wait_event(proc, "engine starting", 30)[-1]["pid"]
            idle = {"idle_engine_vmhwm_mb": round(peak_rss_mb(engine)),
                    "idle_worker_vmhwm_mb": round(peak_rss_mb(proc.proc.pid))}
            row = {**_run_task(bench, proc, topics, where / "spool", audio, args.job_timeout + 120), **idle}
            say(json.dumps(row))
            rows.append(row)
            bench.forget(proc)
        print(json.dumps({"limit_s": args.limit, "bomb_hours": args.hours, "rows": rows}, indent=1))
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
