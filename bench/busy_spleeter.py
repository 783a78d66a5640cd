"""11. Busy share with a real model: section 10's comparison (busy_share.compare) with Spleeter 2-stems
on the CPU in place of the stand-in accelerator.

The same queue (real music: the MUSDB18 excerpt repeated to a song's length, as a 16-bit FLAC) goes
through a processor with ``processor.pipeline = false`` and one with ``true`` (inputs and stems in a
SeaweedFS bucket, FLAC out), taking turns for ``spleeter_rounds`` rounds (on a shared machine, other
work stretches a CPU model's forward far more than the pipeline changes it), and audio-separator's
in-process loop over the same files.  The busy share
is the time the engine child (or the loop's process) spent in Spleeter's forward (audio-separator's
``demix``: STFT, the ONNX network, inverse STFT), timed by the same hook that logs the stand-in's
(devtools/standin_accelerator.py), over the wall time.  Here the model itself runs on the CPU, so the
stages the pipeline runs beside it take cores from it: on a machine of few cores the gain is smaller
than with the stand-in, or none.
"""

from __future__ import annotations

import os

from devtools import musdb_excerpt, spleeter_model

from . import busy_share
from .harness import Bench
from .real_weights import long_song


def run(bench: Bench, sizes: dict, shared: dict | None = None) -> dict:
    tasks = sizes["spleeter_tasks"]
    excerpt = musdb_excerpt.excerpt()
    model_dir = bench.root / "real-models"
    model = spleeter_model.install(model_dir)
    hop, segment = (dict(model.processor_settings)[k] for k in ("mdx_hop_length", "mdx_segment_size"))
    wav, seconds = long_song(bench, excerpt, sizes["spleeter_audio_s"], exact=True)
    song = busy_share.flac_copy(bench, wav, f"{wav.stem}.flac")
    env = {"NUMBA_CACHE_DIR": str(bench.root / "numba-cache")}
    rounds = sizes["spleeter_rounds"]
    runs = busy_share.compare(bench, busy_share.Queue("spleeter", model.filename, model_dir, hop, segment, song,
                                                      tasks, env), rounds)
    sequential, pipelined, _ = busy_share.by_order(runs)
    pairs = ", ".join(f"{s['wall_s'] / p['wall_s']:.2f}×" for s, p in zip(sequential, pipelined))
    cores = len(os.sched_getaffinity(0))
    return {
        "key": "busy_spleeter",
        "title": "11. Busy share with a real model (Spleeter on the CPU)",
        "intro": (f"Section 10's comparison with a real model in place of the stand-in: Spleeter 2-stems "
                  f"(Deezer's weights, the MDX export of section 7: n_fft 4096, hop {hop}, {segment}-frame "
                  f"segments) on {runs[-1]['device']}, {tasks} tasks of {seconds:g} s of real music (the MUSDB18 "
                  f"excerpt \"Falcon 69\" repeated and cut to that length, a 16-bit stereo FLAC), FLAC stems, "
                  f"inputs and stems in a SeaweedFS bucket on loopback. "
                  + (f"The two processors take turns, {rounds} runs each (false then true, then true then false, "
                     f"...: whatever else the machine does weighs on both alike), then the in-process loop runs "
                     f"once. " if rounds > 1 else "The sequential processor runs, then the pipelined one, then the "
                                                  "in-process loop. ")
                  + f"Busy share: "
                  f"the time the engine child spent in Spleeter's forward (audio-separator's `demix`: STFT, the "
                  f"ONNX network, inverse STFT; the secondary stem's match-mix pass not counted), timed in the "
                  f"child by the hook that logs the stand-in's, over the wall time from the tasks' sending to the "
                  f"last result's produce time; for the in-process loop, over its loop time. Forward: the median "
                  f"time of one task's forward, which on the CPU stretches when other work takes the cores. The "
                  f"model runs on the same {cores} cores as everything else: the stages that the pipeline runs "
                  f"beside it (fetch and decode, FLAC encoding, the bucket) take CPU from it instead of filling an "
                  f"accelerator's idle time, so the gain is smaller than with the stand-in, or none."),
        "header": busy_share.FORWARD_HEADER,
        "rows": busy_share.rows(runs, tasks, forward=True),
        "notes": [f"Pipelined against sequential: {busy_share.gain(runs):.2f}× the tasks per minute"
                  + (f" (the medians' ratio; round by round: {pairs})." if rounds > 1 else ".")],
        "summary": busy_share.summary(runs, tasks),
        "data": {"runs": runs, "tasks": tasks, "audio_s": seconds, "rounds": rounds, "cores": cores},
    }
