"""A realistic separation's time on this machine: the UVR-sized model (realmodel.py) separating
a clip in one in-process loop, scaled to a 4-minute song by its measured seconds per audio second."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from . import realmodel
from .harness import Bench, median, say

SONG_S = 240.0


def run_inprocess(bench: Bench, model: str, hop: int, segment: int, groups: list[list[Path]], out: Path,
                  timeout: float = 900, warmup: Path | None = None, model_dir: Path | None = None,
                  module: str = "devtools.inprocess_loop", env: dict | None = None) -> dict:
    """devtools.inprocess_loop's JSON line (*module*: a variant of it taking the same arguments, with
    *env* added to its environment)."""
    cmd = [sys.executable, "-m", module, str(model_dir or bench.model_dir), model, str(hop),
           str(segment), str(out), json.dumps([[str(p) for p in g] for g in groups])] + ([str(warmup)] if warmup else [])
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=bench._env(env))
    if run.returncode != 0:
        raise RuntimeError(f"in-process loop failed ({run.returncode}): {run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def measure(bench: Bench, sizes: dict, shared: dict) -> dict:
    seconds = sizes["realistic_seconds"]
    info = shared.get("realmodel") or realmodel.install(bench.model_dir)
    shared["realmodel"] = info
    clip = bench.sample(seconds)
    copies = []
    for i in range(2):
        target = bench.samples / f"realistic-{i}.wav"
        shutil.copyfile(clip, target)
        copies.append(target)
    say(f"realistic separation: the UVR-sized model ({info['params'] / 1e6:.1f} M parameters) on "
        f"2 x {seconds} s of audio")
    out = run_inprocess(bench, realmodel.NAME, realmodel.HOP_LENGTH, realmodel.SEGMENT_SIZE, [[p] for p in copies],
                        bench.workdir("realistic"), warmup=bench.sample(1))
    per_audio_s = median(out["per_file_s"]) / seconds
    result = {
        "per_audio_s": per_audio_s, "song_s": per_audio_s * SONG_S, "clip_s": seconds, "runs": out["per_file_s"],
        "device": out["device"], "model": info,
        "describe": (f"an MDX model of UVR's dimensions ({info['dim_f']}×{info['dim_t']} spectrogram segments, "
                     f"n_fft {info['n_fft']}, {info['params'] / 1e6:.1f} M generated weights) took "
                     f"{per_audio_s:.3f} s per second of audio on {out['device']} (median of "
                     f"{len(out['per_file_s'])} runs on {seconds} s clips), so a 4-minute song takes "
                     f"{per_audio_s * SONG_S:.0f} s here"),
    }
    shared["realistic"] = result
    return result
