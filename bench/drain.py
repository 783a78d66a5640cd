"""2. Drain accuracy: SIGTERM at a random point of a job; exit time minus the job's remaining time
(the overshoot), and how many stops would have needed systemd's SIGKILL (TimeoutStopSec).  Beside it,
the other way a running job is stopped: a cancellation at a random point of it, from its request's
record to the task's cancelled result."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

from uvrd.boards import cancellations
from uvrd.runtime.drain import margin_for, parse_timespan

from .harness import ROOT, Bench, max_or_nan, median, pct, say, start_many

# The processor units' shared source (packaging/systemd/units.py makes uvrd-processor.service from it).
UNIT = ROOT / "packaging" / "systemd" / "uvrd-processor@.service"


def stop_timeout() -> float:
    """The processor unit's TimeoutStopSec: past it, systemd sends SIGKILL."""
    m = re.search(r"^TimeoutStopSec=(.+)$", UNIT.read_text(), re.M)
    return parse_timespan(m.group(1)) if m else 90.0


def _job(bench: Bench, proc, topics, audio: Path, spool: Path, reader) -> tuple[str, float]:
    """Send one task; the monotonic time its separation started (STATUS=separating ...)."""
    since = time.monotonic()
    task_uuid = bench.send_task(topics.tasks, bench.spool_copy(spool, audio))
    bench.flush()
    deadline = time.monotonic() + 120
    while True:
        t = proc.notify.first(lambda m: m.startswith("STATUS=separating"), since)
        if t is not None:
            return task_uuid, t
        if time.monotonic() > deadline or not proc.alive():
            raise RuntimeError(f"the job did not start: {proc.log_text()[-2000:]}")
        time.sleep(0.01)


def _cancel_latencies(bench: Bench, proc, topics, audio: Path, spool: Path, reader, job_s: float, rng,
                      n: int) -> list[dict]:
    """Cancel *n* jobs, each at a random point of it: seconds from the request's record to the result's."""
    records = []
    for _ in range(n):
        task_uuid, started = _job(bench, proc, topics, audio, spool, reader)
        fraction = rng.uniform(0.1, 0.9)
        time.sleep(max(0.0, started + fraction * job_s - time.monotonic()))
        record, _ = cancellations.request(topics.cancellations, task_uuid)
        asked = time.monotonic()
        bench.producer.send(record.topic, key=record.key, value=record.value)
        bench.flush()
        arrived, result = reader.wait(1, 120, proc.alive)[0]
        reader.take()
        records.append({"fraction": fraction, "cancel_s": arrived - asked, "remaining_s": job_s * (1 - fraction),
                        "cancelled": result.get("task_uuid") == task_uuid and bool(result.get("cancelled"))})
    return records


def run(bench: Bench, runs: int, quick: bool) -> dict:
    timeout_stop = stop_timeout()
    window = timeout_stop - margin_for(timeout_stop)
    seconds = 10 if quick else 20
    audio = bench.sample(seconds)
    rng = random.Random(20240601)
    say(f"drain: starting {runs + 1} processors (one calibrates the job's length)")

    def make(i):
        where = bench.workdir("drain")
        topics = bench.topics("drain")
        config = bench.write_config(where, topics, group=f"drain-{i}", processor={"drain_timeout": window})
        return bench.daemon("processor", config), topics, where

    procs = start_many(bench, make, runs + 1, parallel=2 if quick else 4)

    # A first (1 s) task on every processor, all at once: the jobs measured below run on a warm engine,
    # not on one paying its first separation's one-off initialisation.
    readers = [bench.results_reader(topics.results) for _, topics, _ in procs]
    for _, topics, where in procs:
        bench.send_task(topics.tasks, bench.spool_copy(where / "spool", bench.sample(1)))
    bench.flush()
    for (proc, _, _), reader in zip(procs, readers):
        reader.wait(1, 300, proc.alive)
        reader.take()

    # Calibration: one job run to its end, for the span the random stop points are drawn from.
    proc, topics, where = procs[0]
    reader = readers[0]
    _, started = _job(bench, proc, topics, audio, where / "spool", reader)
    arrived, _ = reader.wait(1, 120)[0]
    job_s = arrived - started
    reader.take()
    say(f"drain: a job on {seconds} s of audio takes {job_s:.2f} s")
    n_cancels = max(2, runs // 2)
    say(f"drain: {n_cancels} running jobs cancelled")
    cancels = _cancel_latencies(bench, proc, topics, audio, where / "spool", reader, job_s, rng, n_cancels)
    reader.close()
    bench.forget(proc)

    records = []
    for (proc, topics, where), reader in zip(procs[1:], readers[1:]):
        task_uuid, started = _job(bench, proc, topics, audio, where / "spool", reader)
        fraction = rng.uniform(0.02, 0.98)
        time.sleep(max(0.0, started + fraction * job_s - time.monotonic()))
        sent = proc.signal()
        exited = proc.wait_exit(timeout_stop + 30)
        if exited is None:
            proc.kill()
            exited = float("inf")
        offset = time.time() - time.monotonic()
        stems = list((where / "output" / task_uuid).glob("*.wav"))
        job_end = max(p.stat().st_mtime for p in stems) - offset if stems else float("nan")
        reader.wait(1, 10) if stems else None
        results = [r for _, r in reader.seen if r.get("task_uuid") == task_uuid]
        records.append({
            "fraction": fraction, "exit_s": exited - sent, "remaining_s": job_end - sent,
            "overshoot_s": exited - job_end, "code": proc.proc.returncode,
            "committed": len(results), "success": bool(results and results[0].get("success")),
            "needs_sigkill": exited - sent > timeout_stop,
        })
        reader.close()
        bench.forget(proc)

    over = [r["overshoot_s"] for r in records]
    cancel_s = [c["cancel_s"] for c in cancels]
    cancelled = sum(c["cancelled"] for c in cancels)
    kills = sum(r["needs_sigkill"] for r in records)
    ok = sum(1 for r in records if r["code"] == 0 and r["committed"] == 1 and r["success"])
    rows = [
        ["SIGTERM to exit", f"{median([r['exit_s'] for r in records]):.2f} s",
         f"{pct([r['exit_s'] for r in records], 0.9):.2f} s", f"{max_or_nan([r['exit_s'] for r in records]):.2f} s"],
        ["job time left at SIGTERM", f"{median([r['remaining_s'] for r in records]):.2f} s",
         f"{pct([r['remaining_s'] for r in records], 0.9):.2f} s",
         f"{max_or_nan([r['remaining_s'] for r in records]):.2f} s"],
        ["overshoot (exit − job end)", f"{median(over) * 1000:.0f} ms", f"{pct(over, 0.9) * 1000:.0f} ms",
         f"{max_or_nan(over) * 1000:.0f} ms"],
        ["cancellation to its result (running job)", f"{median(cancel_s) * 1000:.0f} ms",
         f"{pct(cancel_s, 0.9) * 1000:.0f} ms", f"{max_or_nan(cancel_s) * 1000:.0f} ms"],
    ]
    figure = _plot(records, job_s)
    return {
        "key": "drain",
        "title": "2. Drain accuracy",
        "intro": (f"{len(records)} processors, each SIGTERMed at a random point (uniform over 2-98 %) of a "
                  f"{job_s:.1f} s job ({seconds} s of audio, tiny model); the job's end is its stems' write time. "
                  f"Overshoot = time to exit − the job's remaining time: the commit, closing the Kafka clients "
                  f"and the engine. The unit's TimeoutStopSec is {timeout_stop:g} s (drain window "
                  f"{window:g} s); a stop past it would have been SIGKILLed. Beside it, {len(cancels)} jobs "
                  f"of the same length cancelled at a random point (10-90 %) on one processor: from the "
                  f"cancellation's record to the task's result."),
        "header": ["", "median", "p90", "max"],
        "rows": rows,
        "notes": [f"Stops that would have needed SIGKILL: **{kills}/{len(records)}**. Stops that exited 0 with "
                  f"exactly one committed, successful result for the job: {ok}/{len(records)}. Cancelled "
                  f"running jobs whose result said so: {cancelled}/{len(cancels)}."],
        "figures": [figure] if figure else [],
        "summary": [(f"overshoot after the job's end, median / max ({len(records)} stops)",
                     f"{median(over) * 1000:.0f} ms / {max_or_nan(over) * 1000:.0f} ms"),
                    ("stops that would have needed SIGKILL", f"{kills}/{len(records)} ({kills / max(1, len(records)):.0%})"),
                    ("stops with exactly one committed result", f"{ok}/{len(records)}"),
                    (f"running job cancelled: request to result, median / max ({len(cancels)} jobs)",
                     f"{median(cancel_s) * 1000:.0f} ms / {max_or_nan(cancel_s) * 1000:.0f} ms")],
        "data": {"job_s": job_s, "records": records, "timeout_stop_s": timeout_stop, "window_s": window,
                 "cancels": cancels},
    }


def _plot(records, job_s):
    from .report import plt, save_figure

    if plt is None or not records:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.scatter([r["fraction"] * 100 for r in records], [r["exit_s"] for r in records], label="SIGTERM → exit")
    ax.scatter([r["fraction"] * 100 for r in records], [r["remaining_s"] for r in records], marker="x",
               label="job time left at SIGTERM")
    ax.set_xlabel("SIGTERM at % of the job")
    ax.set_ylabel("seconds")
    ax.set_title(f"Drain: exit follows the job's end ({job_s:.1f} s jobs)")
    ax.legend()
    return save_figure(fig, "drain.png")
