"""12. Peak memory, sequential vs pipelined, on a 2-hour input (the long-audio chunked path).

What the pipeline holds beside the model is bounded by design (uvrd/processor/pipeline.py): one task's
input fetched and decoded ahead (decoded_input.py: at most one chunk's length of float32 samples, in a
file the fetch stage writes block by block), one task's stems being encoded and stored, and in the
engine child the next task's job, sent ahead once its input is decoded (its samples read and prepared
beside the forwards of the task before).  This measures it.  The queue is the 2-hour input between two inputs one chunk long (chunk plus overlap: the
longest the fetch stage decodes ahead), inputs and stems in a SeaweedFS bucket, FLAC out, so that
while the long task is in the model, the pipelined processor encodes and stores the task before's stems
and fetches and decodes the task after's input, and the engine child prepares that task's job beside
the long task's forwards: all it ever holds beside a task.  The model is the
stand-in accelerator (its sleeping forward: memory, not speed, is the point here), at a rate that keeps
the section short.

Figures, per process: the resident memory once the processor is ready (after its warm-up), and the peak
over the queue (VmHWM, reset when the queue is sent: /proc/PID/clear_refs), of the processor and of its
engine child; and the peak of the whole tree's summed proportional set size (the processor, the engine,
the ffmpeg runs under them: each shared page counted once in all), sampled every half second.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from devtools import crafted_audio, standin_accelerator
from devtools.children import cpu_s, descendants, peak_rss_mb, pss_mb, reset_peak_rss, rss_mb
from uvrd.broker.object_store import ObjectStore
from uvrd.config import ProcessorConfig

from . import busy_share
from .harness import Bench, say, wait_event

# The stand-in's forward: 2 hours in 14 s.  Its sleep takes no memory; a faster "card" only shortens
# the section (the CPU steps around it, on 2 hours of audio, take minutes).
S_PER_AUDIO_S = 0.002
PREFIX = "memory"
SAMPLE_EVERY_S = 0.5


def _through_processor(bench: Bench, store: ObjectStore, model_dir: Path, inputs: list[Path], audio_s: float,
                       chunking: dict, pipeline: bool, env: dict) -> dict:
    label = "pipelined" if pipeline else "sequential"
    name = f"{PREFIX}-{label}"
    where = bench.workdir(name)
    topics = bench.topics(name)
    config = bench.write_config(where, topics, group=name, model=standin_accelerator.MODEL, model_dir=model_dir,
                                storage=store.storage_settings(prefix=PREFIX),
                                processor={"output_format": "flac", "pipeline": pipeline, **chunking})
    proc = bench.daemon("processor", config, env=env, module="devtools.standin_processor")
    proc.wait_ready()
    pids = {"processor": proc.pid, "engine": wait_event(proc, "engine starting", 30)[-1]["pid"]}
    client = store.client()
    keys = []
    for path in inputs:
        keys.append(f"{PREFIX}/inputs/{uuid.uuid4()}{path.suffix}")
        client.upload_file(str(path), store.bucket, keys[-1])
    reader = bench.results_reader(topics.results)
    say(f"memory, {label}: {', '.join(p.name for p in inputs)}")
    ready = {n: rss_mb(pid) or 0.0 for n, pid in pids.items()}
    for pid in pids.values():
        reset_peak_rss(pid)
    cpu_before = {n: cpu_s(pid) or 0.0 for n, pid in pids.items()}
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    for key in keys:
        bench.send_task(topics.tasks, Path(key), storage="s3", audio_key=key, audio_path=None)
    bench.flush()
    # A bound that ends a stuck run, not a timing: half a second per second of audio, and 10 minutes.
    tree_peak, tree_at, deadline = 0.0, 0.0, started + 600 + audio_s / 2
    tree_parts: dict[str, float] = {}
    while len(reader.seen) < len(keys):
        parts = {f"{_name(pid)} {pid}": pss_mb(pid) or 0.0 for pid in [proc.pid, *descendants(proc.pid)]}
        if sum(parts.values()) > tree_peak:
            tree_peak, tree_at, tree_parts = sum(parts.values()), time.monotonic() - started, parts
        if not proc.alive():
            raise RuntimeError(f"the processor exited:\n{proc.log_text()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(reader.seen)} of {len(keys)} results by the deadline")
        reader.poll(int(SAMPLE_EVERY_S * 1000))
    peaks = {n: peak_rss_mb(pid) for n, pid in pids.items()}
    cpu = {n: (cpu_s(pid) or 0.0) - cpu_before[n] for n, pid in pids.items()}
    results = reader.take()
    reader.close()
    load_after = os.getloadavg()[0]
    engines = len(proc.events("engine starting"))
    sent_ahead = len(proc.events("next task's job sent to the engine ahead of its turn"))
    bench.forget(proc)
    failed = [r.get("error_message") for _, r in results if not r.get("success")]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(keys)} tasks failed: {failed[0]}")
    if engines != 1 or None in peaks.values():
        raise RuntimeError("the engine child was restarted during the queue: its peak would be a new child's")
    return {"label": f"uvrd, processor.pipeline = {str(pipeline).lower()}", "ready_mb": ready, "peak_mb": peaks,
            "tree_peak_mb": tree_peak, "tree_peak_at_s": tree_at, "tree_peak_parts_mb": tree_parts,
            "cpu_s": cpu, "results_at_s": sorted(at - started for at, _ in results), "wall_s": max(at for at, _ in results) - started,
            "load": (load_before, load_after), "sent_ahead": sent_ahead}


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def run(bench: Bench, sizes: dict, shared: dict | None = None) -> dict:
    long_s = sizes["memory_long_s"]
    defaults = ProcessorConfig()
    chunk_s = sizes.get("memory_chunk_s", defaults.chunk_seconds)
    overlap_s = min(defaults.chunk_overlap_seconds, chunk_s / 2)
    chunking = {"chunk_seconds": chunk_s, "chunk_overlap_seconds": overlap_s}
    model_dir = bench.root / "standin-models"
    standin_accelerator.install(model_dir)
    bench.samples.mkdir(parents=True, exist_ok=True)
    length = f"{long_s / 3600:g}-hour" if long_s >= 3600 else f"{long_s / 60:g}-minute"
    say(f"memory: making the {length} input")
    long_input = crafted_audio.two_tones(bench.samples / f"two-tones-{long_s:g}s.flac", long_s)
    one_chunk_s = chunk_s + overlap_s
    one_chunk = busy_share.flac_copy(bench, bench.sample(one_chunk_s), f"memory-{one_chunk_s:g}s.flac")
    inputs = [one_chunk, long_input, one_chunk]
    env = {standin_accelerator.RATE_ENV: str(S_PER_AUDIO_S), "NUMBA_CACHE_DIR": str(bench.root / "numba-cache")}
    store = ObjectStore(bench.root / f"weed-{PREFIX}", log_path=bench.root / f"weed-{PREFIX}.log").start()
    try:
        runs = [_through_processor(bench, store, model_dir, inputs, long_s + 2 * one_chunk_s, chunking, pipeline, env)
                for pipeline in (False, True)]
    finally:
        store.stop()
    one_chunk_mb = one_chunk_s * 44100 * 2 * 4 / 2**20
    rows = [[r["label"], *(cell for n in ("processor", "engine") for cell in (
                f"{r['ready_mb'][n]:.0f} MiB", f"{r['peak_mb'][n]:.0f} MiB ({r['peak_mb'][n] - r['ready_mb'][n]:+.0f})")),
             f"{r['tree_peak_mb']:.0f} MiB at {r['tree_peak_at_s']:.0f} s",
             " / ".join(f"{at:.0f}" for at in r["results_at_s"]) + " s",
             f"{r['load'][0]:.1f} / {r['load'][1]:.1f}"] for r in runs]
    extra = {n: round(runs[1]["peak_mb"][n] - runs[0]["peak_mb"][n]) for n in ("processor", "engine")}
    extra["tree"] = round(runs[1]["tree_peak_mb"] - runs[0]["tree_peak_mb"])
    return {
        "key": "pipeline_memory",
        "title": "12. Peak memory, sequential vs pipelined (long input)",
        "intro": (f"Three tasks in a row through one exactly-once processor, `processor.pipeline = false` then "
                  f"`true`: a {one_chunk_s:g}-s input (one chunk plus its overlap, the longest that the pipeline's "
                  f"fetch stage decodes ahead: {one_chunk_mb:.0f} MiB of float32 samples), the {length} input "
                  f"(two tones, a 16-bit stereo FLAC at 44.1 kHz, separated in chunks of {chunk_s:g} s plus "
                  f"{overlap_s:g} s of overlap), then the {one_chunk_s:g}-s input again; inputs and stems in a "
                  f"SeaweedFS bucket on loopback, FLAC out. Beside the long task in the model, the pipelined "
                  f"processor encodes and stores the first task's stems, fetches and decodes the third's input "
                  f"and sends its job to the engine child, which prepares it beside the long task's forwards: "
                  f"everything it holds beside a task at once. The model is the stand-in accelerator "
                  f"({S_PER_AUDIO_S:g} s of sleep per second of audio: memory, not speed, is measured here). "
                  f"*Ready*: the resident memory (VmRSS) once the processor is ready, its warm-up done. *Peak*: "
                  f"VmHWM over the queue (reset as it is sent), and in brackets what it adds to *ready*; resident "
                  f"memory counts the pages of a file the process maps in as well as its heap. *Tree*: the peak of the summed proportional set size "
                  f"(PSS: a page shared by n processes counts 1/n) of the processor and every process under it "
                  f"(the engine child, multiprocessing's resource tracker, the ffmpeg runs that decode, chunk and "
                  f"encode), sampled every {SAMPLE_EVERY_S:g} s, and when it came after the queue was sent. "
                  f"*Results at*: when each task's result was produced, after the queue was sent."),
        "header": ["run", "processor, ready", "processor, peak", "engine child, ready", "engine child, peak",
                   "tree, peak PSS (sampled)", "results at", "load average, start / end"],
        "rows": rows,
        "notes": [f"Pipelined less sequential, peak: processor {extra['processor']:+d} MiB, engine child "
                  f"{extra['engine']:+d} MiB, tree {extra['tree']:+d} MiB.",
                  "Jobs sent to the engine child ahead of their turn (while the task before was in it): " +
                  "; ".join(f"{'pipelined' if i else 'sequential'} {r['sent_ahead']}" for i, r in enumerate(runs)) + ".",
                  "CPU time over the queue (user and system, the ffmpeg runs each waited for included), processor "
                  "/ engine child: " + "; ".join(f"{'pipelined' if i else 'sequential'} {r['cpu_s']['processor']:.1f} "
                                                 f"/ {r['cpu_s']['engine']:.1f} s" for i, r in enumerate(runs)) + ".",
                  "The tree at its peak, PSS by process (command name and PID): " + "; ".join(
                      f"{'pipelined' if i else 'sequential'}: " + ", ".join(
                          f"{n} {mb:.0f} MiB" for n, mb in sorted(r["tree_peak_parts_mb"].items(), key=lambda x: -x[1]))
                      for i, r in enumerate(runs)) + "."],
        "summary": [(f"peak RSS on the {length} input, processor / engine child, sequential against pipelined",
                     " against ".join(f"{r['peak_mb']['processor']:.0f} / {r['peak_mb']['engine']:.0f} MiB"
                                      for r in runs))],
        "data": {"runs": runs, "long_s": long_s, "chunk_s": chunk_s, "overlap_s": overlap_s,
                 "s_per_audio_s": S_PER_AUDIO_S},
    }
