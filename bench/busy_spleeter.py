"""11. Busy share with a real model: section 10's comparison (busy_share.compare) with Spleeter 2-stems
on the CPU in place of the stand-in accelerator.

The same queue (real music: the MUSDB18 excerpt repeated to a song's length, as a 16-bit FLAC) goes
through a processor with ``processor.pipeline = false``, one with ``true`` (inputs and stems in a
SeaweedFS bucket, FLAC out), and audio-separator's in-process loop over the same files.  The busy share
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
    runs = busy_share.compare(bench, busy_share.Queue("spleeter", model.filename, model_dir, hop, segment, song,
                                                      tasks, env))
    gain = runs[0]["wall_s"] / runs[1]["wall_s"]
    cores = len(os.sched_getaffinity(0))
    return {
        "key": "busy_spleeter",
        "title": "11. Busy share with a real model (Spleeter on the CPU)",
        "intro": (f"Section 10's comparison with a real model in place of the stand-in: Spleeter 2-stems "
                  f"(Deezer's weights, the MDX export of section 7: n_fft 4096, hop {hop}, {segment}-frame "
                  f"segments) on {runs[2]['device']}, {tasks} tasks of {seconds:g} s of real music (the MUSDB18 "
                  f"excerpt \"Falcon 69\" repeated and cut to that length, a 16-bit stereo FLAC), FLAC stems, inputs and stems in a "
                  f"SeaweedFS bucket on loopback. Busy share: the time the engine child spent in Spleeter's "
                  f"forward (audio-separator's `demix`: STFT, the ONNX network, inverse STFT; the secondary "
                  f"stem's match-mix pass not counted), timed in the child by the hook that logs the stand-in's, "
                  f"over the wall time from the tasks' sending to the last result's produce time; for the "
                  f"in-process loop, over its loop time. Forward: the median time of one task's forward, which "
                  f"on the CPU stretches when other work takes the cores. The model runs on the same {cores} cores as everything "
                  f"else: the stages that the pipeline runs beside it (fetch and decode, FLAC encoding, the "
                  f"bucket) take CPU from it instead of filling an accelerator's idle time, so the gain is "
                  f"smaller than with the stand-in, or none."),
        "header": busy_share.FORWARD_HEADER,
        "rows": busy_share.rows(runs, tasks, forward=True),
        "notes": [f"Pipelined against sequential: {gain:.2f}× the tasks per minute."],
        "summary": busy_share.summary(runs, tasks),
        "data": {"runs": runs, "tasks": tasks, "audio_s": seconds, "cores": cores},
    }
