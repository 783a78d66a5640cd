"""10. Busy share: how much of the time a (stand-in) accelerator works while a queue of tasks drains.

The stand-in accelerator (devtools/standin_accelerator.py) is a model whose forward is a sleep of a
fixed time per second of audio, in the engine child, so the CPU stages around it (fetching the input
from the bucket, decoding, writing FLAC stems, storing them in the bucket, committing) are what they
would be beside a GPU.  The same queue goes through a processor with ``processor.pipeline = false``
(today's order, one task start to finish), one with ``pipeline = true``, and audio-separator's own
in-process loop over the same files (local files in and out: no bucket, no Kafka).  That comparison
(:func:`compare`) is section 11's too (busy_spleeter.py), with a real model in place of the stand-in.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from devtools import standin_accelerator, tinymodel
from uvrd.broker.object_store import ObjectStore

from .harness import Bench, median, say
from .realistic import run_inprocess

# The stand-in's seconds of forward per second of audio: a 4-minute song in 4.8 s, what the issue
# gives for an MDX model on a current GPU ("a few seconds").  `--busy-s-per-audio-s` sets another
# (0.05, a slower model or card: 12 s a song, was this section's rate before; docs/bench.md has both).
S_PER_AUDIO_S = 0.02
PREFIX = "busy"
SEQUENTIAL, PIPELINED = "uvrd, processor.pipeline = false", "uvrd, processor.pipeline = true"
IN_PROCESS = "audio-separator's in-process loop (local files, no Kafka, no bucket)"
HEADER = ["run", "wall time", "tasks per minute", "busy share", "idle between forwards (median)",
          "load average, start / end"]
# With a model on the CPU, the forward itself stretches when other work takes the cores.
FORWARD_HEADER = [*HEADER[:4], "forward (median)", *HEADER[4:]]


@dataclass(frozen=True)
class Queue:
    """What one comparison sends: *tasks* copies of *song* (a FLAC) for *model*, separated with
    audio-separator's MDX settings *hop* and *segment*; *env* goes to the processors and the loop
    (the stand-in's rate, numba's cache).  *label* names the runs' directories, topics and bucket prefix."""

    label: str
    model: str
    model_dir: Path
    hop: int
    segment: int
    song: Path
    tasks: int
    env: dict


def flac_copy(bench: Bench, source: Path, name: str) -> Path:
    """*source* (a 16-bit WAV) as a FLAC under the bench's samples, as users send songs (made once per name)."""
    path = bench.samples / name
    if not path.exists():
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(source), "-c:a", "flac", str(path)], check=True)
    return path


def compare(bench: Bench, queue: Queue, rounds: int = 1) -> list[dict]:
    """The queue through a processor with ``processor.pipeline = false``, then one with ``true`` (inputs
    and stems in a SeaweedFS bucket, FLAC out), *rounds* times, each round in the other order than the
    one before (false true, true false, ...: whatever else the machine does weighs on both alike), then
    through audio-separator's in-process loop over local copies of the same file: each run's wall time,
    busy share (the time the engine child's model spent in its forward, from the busy log), the
    forwards' median length and the median idle time between them, and the load average."""
    store = ObjectStore(bench.root / f"weed-{queue.label}", log_path=bench.root / f"weed-{queue.label}.log").start()
    try:
        runs = [_through_processor(bench, store, queue, pipeline) for turn in range(rounds)
                for pipeline in ((False, True) if turn % 2 == 0 else (True, False))]
    finally:
        store.stop()
    runs.append(_in_process(bench, queue))
    return runs


def rows(runs: list[dict], tasks: int, forward: bool = False) -> list[list[str]]:
    """The table's rows (HEADER; *forward*: FORWARD_HEADER) for :func:`compare`'s runs, in the order run
    (numbered where an order ran more than once)."""
    numbered = len(runs) > 3
    return [[f"{i}. {r['label']}" if numbered else r["label"], f"{r['wall_s']:.1f} s", f"{tasks / r['wall_s'] * 60:.2f}", f"{r['share'] * 100:.1f} %",
             *([f"{r['forward_s']:.2f} s"] if forward else []), f"{r['gap_s']:.2f} s",
             f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"] for i, r in enumerate(runs, 1)]


def by_order(runs: list[dict]) -> list[list[dict]]:
    """:func:`compare`'s runs grouped: the sequential ones, the pipelined ones, the in-process loop."""
    return [[r for r in runs if r["label"] == label] for label in (SEQUENTIAL, PIPELINED, IN_PROCESS)]


def gain(runs: list[dict]) -> float:
    """Pipelined tasks per minute over sequential ones: the medians' ratio."""
    sequential, pipelined, _ = by_order(runs)
    return median([r["wall_s"] for r in sequential]) / median([r["wall_s"] for r in pipelined])


def summary(runs: list[dict], tasks: int) -> list[tuple[str, str]]:
    """The summary's lines for :func:`compare`'s runs (each order's median where it ran more than once)."""
    groups = by_order(runs)
    several = any(len(g) > 1 for g in groups)
    return [(f"busy share, sequential / pipelined / in-process loop{' (medians)' if several else ''}",
             " / ".join(f"{median([r['share'] for r in g]) * 100:.1f} %" for g in groups)),
            (f"tasks per minute, sequential / pipelined / in-process loop{' (medians)' if several else ''}",
             " / ".join(f"{tasks / median([r['wall_s'] for r in g]) * 60:.2f}" for g in groups))]


def _through_processor(bench: Bench, store: ObjectStore, queue: Queue, pipeline: bool) -> dict:
    label = "pipelined" if pipeline else "sequential"
    name = f"{queue.label}-{label}"
    where = bench.workdir(name)
    topics = bench.topics(name)
    busy_log = where / "busy.log"
    config = bench.write_config(where, topics, group=name, model=queue.model, model_dir=queue.model_dir,
                                storage=store.storage_settings(prefix=queue.label),
                                processor={"output_format": "flac", "pipeline": pipeline,
                                           "mdx_hop_length": queue.hop, "mdx_segment_size": queue.segment})
    proc = bench.daemon("processor", config, env={**queue.env, standin_accelerator.BUSY_LOG_ENV: str(busy_log)},
                        module="devtools.standin_processor")
    proc.wait_ready()
    busy_log.unlink(missing_ok=True)  # the warm-up's forward is not the queue's
    client = store.client()
    keys = []
    for _ in range(queue.tasks):
        key = f"{queue.label}/inputs/{uuid.uuid4()}.flac"
        client.upload_file(str(queue.song), store.bucket, key)
        keys.append(key)
    reader = bench.results_reader(topics.results)
    say(f"{queue.label}, {label}: {queue.tasks} tasks of {queue.song.name}")
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    for key in keys:
        bench.send_task(topics.tasks, Path(key), storage="s3", audio_key=key, audio_path=None)
    bench.flush()
    results = reader.wait(queue.tasks, 120 + queue.tasks * 120, proc.alive)
    reader.close()
    failed = [r.get("error_message") for _, r in results if not r.get("success")]
    if failed:
        raise RuntimeError(f"{len(failed)} of {queue.tasks} tasks failed: {failed[0]}")
    ended = max(at for at, _ in results)
    bench.forget(proc)
    forwards = standin_accelerator.busy_intervals(busy_log)
    return {"label": PIPELINED if pipeline else SEQUENTIAL, "wall_s": ended - started,
            "share": standin_accelerator.busy_share(forwards, started, ended), **_forward_figures(forwards),
            "load": (load_before, os.getloadavg()[0])}


def _forward_figures(forwards: list[tuple[float, float]]) -> dict:
    """How many forwards, their median length, and the median time the model waited between two of
    them: what each task's steps around the model still cost it."""
    gaps = sorted(b[0] - a[1] for a, b in itertools.pairwise(forwards))
    lengths = sorted(b - a for a, b in forwards)
    return {"forwards": len(forwards), "forward_s": lengths[len(lengths) // 2] if lengths else float("nan"),
            "gap_s": gaps[len(gaps) // 2] if gaps else float("nan")}


def _in_process(bench: Bench, queue: Queue) -> dict:
    """audio-separator's own loop over the same files (copies on the local disk), FLAC out."""
    files = []
    for i in range(queue.tasks):
        files.append(bench.samples / f"{queue.label}-loop-{i}.flac")
        shutil.copyfile(queue.song, files[-1])
    busy_log = bench.workdir(f"{queue.label}-loop-log") / "busy.log"
    say(f"{queue.label}, in-process loop: {queue.tasks} files")
    load_before = os.getloadavg()[0]
    # One group: one timed loop.  The loop separates a warm-up file first, outside the timed group.
    out = run_inprocess(bench, queue.model, queue.hop, queue.segment, [files], bench.workdir(f"{queue.label}-loop"),
                        timeout=300 + queue.tasks * 120, warmup=bench.sample(1), model_dir=queue.model_dir,
                        module="devtools.standin_loop",
                        env={**queue.env, standin_accelerator.BUSY_LOG_ENV: str(busy_log),
                             "UVRD_INPROCESS_FORMAT": "flac"})
    forwards = standin_accelerator.busy_intervals(busy_log)[1:]  # the first is the warm-up file's
    loop_s = out["loops_s"][0]
    return {"label": IN_PROCESS, "wall_s": loop_s,
            "share": sum(b - a for a, b in forwards) / loop_s if loop_s else float("nan"),
            **_forward_figures(forwards), "load": (load_before, os.getloadavg()[0]),
            "device": out["device"]}


def run(bench: Bench, sizes: dict, shared: dict | None = None) -> dict:
    tasks, seconds, rate = sizes["busy_tasks"], sizes["busy_audio_s"], sizes["busy_s_per_audio_s"]
    model_dir = bench.root / "standin-models"
    standin_accelerator.install(model_dir)
    song = flac_copy(bench, bench.sample(seconds), f"busy-{seconds:g}s.flac")
    # The processors' warm-ups compile numba's code once for all of them.
    env = {standin_accelerator.RATE_ENV: str(rate), "NUMBA_CACHE_DIR": str(bench.root / "numba-cache")}
    runs = compare(bench, Queue(PREFIX, standin_accelerator.MODEL, model_dir, tinymodel.HOP_LENGTH,
                                tinymodel.SEGMENT_SIZE, song, tasks, env))
    forward_s = rate * seconds
    return {
        "key": "busy_share",
        "title": "10. Busy share (stand-in accelerator)",
        "intro": (f"{tasks} tasks of {seconds:g} s (a 16-bit stereo FLAC), FLAC stems, inputs and stems in a "
                  f"SeaweedFS bucket on loopback, through one exactly-once processor whose model is the "
                  f"**stand-in accelerator**: a forward that sleeps {rate:g} s per second of audio "
                  f"({forward_s:.1f} s per task) without using the CPU, in place of a GPU kernel, with every other "
                  f"step real (audio-separator's decode and stem writing, the bucket, Kafka). Busy share: the "
                  f"time in the forward over the wall time from the tasks' sending to the last result's produce "
                  f"time. The in-process loop reads and writes local files (its busy share over its loop time). "
                  f"The load average (1 min) is the machine's, this run's own processes included: on a shared "
                  f"machine, other work slows the CPU steps around the model."),
        "header": HEADER,
        "rows": rows(runs, tasks),
        "notes": [f"Pipelined against sequential: {gain(runs):.2f}× the tasks per minute.",
                  "The stand-in is not a servable model: only `python -m devtools.standin_processor` (the bench) "
                  "runs its sleeping forward."],
        "summary": summary(runs, tasks),
        "data": {"runs": runs, "tasks": tasks, "audio_s": seconds, "s_per_audio_s": rate,
                 "pid": os.getpid()},
    }
