"""6. GPU, only where an accelerator is present: the UVR-sized model on realistic audio lengths,
GPU utilisation while a queue drains through a processor, and whether decoding/encoding overlaps
with GPU work.  Without one it is skipped with a line saying so."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

from . import realistic, realmodel
from .harness import Bench, Finished, median, say
from .report import gpu_name

LENGTHS_S = (60, 240)
QUEUE = 4
OVERLAP_BUSY = 0.95  # the share of busy samples above which the GPU counts as never waiting


def detect(bench: Bench) -> str | None:
    """The accelerator's name, or None: nvidia-smi, then torch.cuda.is_available()."""
    name = gpu_name()
    if name:
        return name
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, env=bench._env(), timeout=120)
    if probe.stdout.strip() == "True":
        return "CUDA device (torch.cuda.is_available(); no nvidia-smi)"
    return None


class Sampler:
    """nvidia-smi's GPU utilisation every 100 ms, timestamped."""

    def __init__(self):
        self.samples: list[tuple[float, float]] = []
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-lms", "100"], stdout=subprocess.PIPE, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                self.samples.append((time.monotonic(), float(line.split(",")[0])))
            except ValueError:
                pass

    def stop(self):
        self.proc.terminate()
        self.proc.wait(5)


def run(bench: Bench, sizes: dict, shared: dict) -> dict:
    device = detect(bench)
    if device is None:
        line = ("Skipped: no accelerator on this machine (no nvidia-smi, torch.cuda.is_available() is False); "
                "run `make bench` on a GPU host to fill this section.")
        say("gpu: " + line)
        return {"key": "gpu", "title": "6. GPU", "intro": line, "summary": [("GPU", "skipped: no accelerator")],
                "data": {"device": None}}
    info = shared.get("realmodel") or realmodel.install(bench.model_dir)
    shared["realmodel"] = info
    quick_lengths = LENGTHS_S if sizes["stop_runs"] > 2 else (20,)
    clips = {s: bench.sample(s) for s in quick_lengths}
    say(f"gpu: {device}; separation times on {list(clips)} s")
    out = realistic.run_inprocess(bench, realmodel.NAME, realmodel.HOP_LENGTH, realmodel.SEGMENT_SIZE,
                                  [[clips[s]] for s in clips for _ in range(2)], bench.workdir("gpu-inproc"))
    per = {s: median(out["per_file_s"][2 * i:2 * i + 2]) for i, s in enumerate(clips)}
    rows = [[f"{s} s", f"{t:.2f} s", f"{s / t:.1f}× real time"] for s, t in per.items()]

    # A queue drains through a processor serving the UVR-sized model; nvidia-smi samples meanwhile.
    length = max(clips)
    where = bench.workdir("gpu-uvrd")
    topics = bench.topics("gpu")
    config = bench.write_config(where, topics, group="gpu", processor={
        "model": realmodel.NAME, "mdx_hop_length": realmodel.HOP_LENGTH, "mdx_segment_size": realmodel.SEGMENT_SIZE})
    proc = bench.daemon("processor", config)
    proc.wait_ready(600)
    reader = bench.results_reader(topics.results)
    bench.send_task(topics.tasks, bench.spool_copy(where / "spool", clips[length]))
    bench.flush()
    reader.wait(1, 600, proc.alive)
    reader.take()
    inputs = [bench.spool_copy(where / "spool", clips[length]) for _ in range(QUEUE)]
    finished = Finished([proc])
    sampler = Sampler()
    t0 = time.monotonic()
    for path in inputs:
        bench.send_task(topics.tasks, path)
    bench.flush()
    finished.wait(QUEUE, 1800)
    arrivals = reader.wait(QUEUE, 60, proc.alive)
    t1 = max(a for a, _ in arrivals)
    sampler.stop()
    reader.close()
    engine_device = next((e.get("device") for e in proc.log_events() if e.get("event") == "engine ready"), "?")
    bench.forget(proc)
    util = [u for t, u in sampler.samples if t0 <= t <= t1]
    busy = sum(1 for u in util if u >= 10) / max(1, len(util))
    mean = sum(util) / max(1, len(util))
    # Work that ran beside the GPU's would leave it busy throughout; every idle sample is the GPU
    # waiting on decoding, the STFT, encoding the stems or the commit.
    overlaps = busy >= OVERLAP_BUSY
    overlap = ("so decoding, encoding and the commit overlap with GPU work: it did not wait for them"
               if overlaps else
               f"so for {1 - busy:.0%} of the drain the GPU waited: decoding, the STFT, encoding the stems and "
               f"the commit run between its work, not beside it")
    notes = [f"Queue of {QUEUE} tasks × {length} s through one processor: {(t1 - t0):.1f} s, "
             f"{(t1 - t0) / QUEUE:.1f} s per task; GPU utilisation mean {mean:.0f} %, ≥ 10 % in {busy:.0%} of "
             f"{len(util)} samples (100 ms), {overlap}.",
             f"The processor's engine reported device `{engine_device}`; the in-process loop ran on "
             f"`{out['device']}`. Separation inside audio-separator runs through onnxruntime: with the CPU build "
             f"installed (`.[cpu]`) the network itself runs on the CPU even on a GPU host; install `.[gpu]`."]
    figure = _plot(sampler.samples, t0, t1)
    return {
        "key": "gpu",
        "title": "6. GPU",
        "intro": f"Device: **{device}**. Model: {info['params'] / 1e6:.1f} M generated weights of UVR's dimensions.",
        "header": ["audio", "separation (median of 2)", "speed"],
        "rows": rows,
        "notes": notes,
        "figures": [figure] if figure else [],
        "summary": [("GPU", device), ("GPU busy while a queue drains", f"{busy:.0%} of the time, mean {mean:.0f} %"),
                    ("decoding/encoding overlap with GPU work", "yes" if overlaps else
                     f"no: the GPU waited {1 - busy:.0%} of the time")],
        "data": {"device": device, "per_length_s": per, "util": sampler.samples, "t0": t0, "t1": t1},
    }


def _plot(samples, t0, t1):
    from .report import plt, save_figure

    if plt is None or not samples:
        return None
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.plot([t - t0 for t, _ in samples], [u for _, u in samples])
    ax.axvspan(0, t1 - t0, color="tab:green", alpha=0.1, label="queue draining")
    ax.set_xlabel("seconds")
    ax.set_ylabel("GPU utilisation (%)")
    ax.legend()
    return save_figure(fig, "gpu.png")


if __name__ == "__main__":
    sys.exit(shutil.which("nvidia-smi") is None)
