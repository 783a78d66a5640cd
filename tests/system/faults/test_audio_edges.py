"""Awkward audio through a running processor: each file is separated, or refused with a message that
says why; the worker never restarts over one."""

from __future__ import annotations

import signal
import subprocess

import numpy as np
import soundfile as sf

from support import wait_until
from devtools import crafted_audio, tinymodel


def _noise(frames: int, channels: int) -> np.ndarray:
    shape = (frames, channels) if channels > 1 else (frames,)
    return (np.random.default_rng(0).standard_normal(shape) * 0.1).astype("float32")


def write_cases(d):
    """name -> (file, None to be separated, or the words its refusal must contain)."""
    def wav(name, data, rate):
        sf.write(d / name, data, rate)
        return d / name

    full = tinymodel.write_sample(d / "full.wav", seconds=2).read_bytes()
    (d / "truncated.wav").write_bytes(full[: len(full) // 2])
    (d / "header-only.wav").write_bytes(full[:30])
    (d / "not-audio.wav").write_text("<html><body>this is not audio</body></html>\n" * 100)
    # Two hours cheaply: FLAC of 8 kHz mono silence is about 1.3 MB.
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono",
                    "-t", "7200", "-c:a", "flac", str(d / "two-hours.flac")], check=True)
    return {
        "zero-length": (wav("zero.wav", np.zeros((0, 2), "float32"), 44100), "no audio (0 samples)"),
        "1 ms": (wav("1ms.wav", _noise(44, 2), 44100), None),
        "silence": (wav("silence.wav", np.zeros((44100, 2), "float32"), 44100), None),
        "mono": (wav("mono.wav", _noise(44100, 1), 44100), None),
        "8 kHz": (wav("8k.wav", _noise(8000, 2), 8000), None),
        "96 kHz": (wav("96k.wav", _noise(96000, 2), 96000), None),
        "8 channels": (wav("8ch.wav", _noise(44100, 8), 44100), None),
        "2 hours": (d / "two-hours.flac", "over this processor's limit of 1:00:00 (processor.max_audio_seconds"),
        "truncated mid-data": (d / "truncated.wav", None),
        "truncated in the header": (d / "header-only.wav", "could not be decoded"),
        "not audio, named .wav": (d / "not-audio.wav", "could not be decoded"),
    }


def test_awkward_audio_is_separated_or_refused_clearly(stack, kafka, tmp_path):
    cases = write_cases(tmp_path)
    # An operator's cap of an hour: longer inputs are refused, whatever they cost to decode.
    p = stack.start(config=stack.write_config("edges.toml", max_audio_seconds=3600))
    results = separate_each(stack, kafka, p, cases, timeout=240)
    for name, (_, refusal) in cases.items():
        result = results[name]
        if refusal is None:
            assert result["success"] is True, (name, result.get("error_message"))
            for stem in ("vocals", "instrumental"):
                info = sf.info(result["stems"][stem])
                # The model's own format: stereo 44.1 kHz, whatever came in.
                assert (info.channels, info.samplerate) == (2, 44100) and info.frames > 0, (name, stem)
        else:
            assert result["success"] is False and refusal in result["error_message"], (name, result)
    refusals_dead_lettered_without_a_restart(stack, kafka, p, cases)


def test_audio_longer_than_its_header_says_stops_at_the_limit(stack, kafka, tmp_path):
    """A header that claims 1 s, a stream that declares no length, a surround one that must be mixed
    down first: each decode stops at max_audio_seconds and the task fails saying so; audio under the
    limit is separated whole, whatever its header claims; the worker never restarts over one."""
    limit = "this processor's limit of 8 s (processor.max_audio_seconds = 8)"
    cases = {  # name -> (file, None to be separated, or the words its refusal must contain)
        "m4a claiming 1 s, holding 40 s": (crafted_audio.lying_m4a(tmp_path / "lie.m4a", 40, claims=1),
                                           f"audio is longer than {limit}; its header says 1 s"),
        "Matroska stream of 40 s": (crafted_audio.stream(tmp_path / "long.mka", 40),
                                    f"audio is longer than {limit}; its container declares no length"),
        "FLAC stream of 40 s": (crafted_audio.stream(tmp_path / "long.flac", 40, "flac"),
                                f"audio is longer than {limit}; its container declares no length"),
        "5.1 Matroska stream of 40 s": (crafted_audio.stream(tmp_path / "long-5.1.mka", 40, channels=6),
                                        f"audio is longer than {limit}; its container declares no length"),
        "m4a claiming 1 s, holding 7 s": (crafted_audio.lying_m4a(tmp_path / "short-lie.m4a", 7, claims=1), None),
        "5.1 Matroska stream of 7 s": (crafted_audio.stream(tmp_path / "short-5.1.mka", 7, channels=6), None),
        "FLAC stream of 7 s": (crafted_audio.stream(tmp_path / "short.flac", 7, "flac"), None),
    }
    p = stack.start(config=stack.write_config("limit.toml", max_audio_seconds=8))
    results = separate_each(stack, kafka, p, cases, timeout=180)
    for name, (_, refusal) in cases.items():
        result = results[name]
        if refusal is None:
            assert result["success"] is True, (name, result.get("error_message"))
            info = sf.info(result["stems"]["vocals"])
            assert abs(info.frames / info.samplerate - 7) < 0.1, (name, "separated whole", info.frames)
        else:
            assert result["success"] is False and result["error_message"] == refusal, (name, result)
    refusals_dead_lettered_without_a_restart(stack, kafka, p, cases)


def separate_each(stack, kafka, processor, cases: dict, timeout: float) -> dict:
    """One task per case's file through the ready *processor*; each case's result, by name."""
    processor.wait_ready()
    tasks = {}
    for name, (path, _) in cases.items():
        task = stack.task(stack.spool_copy(path))
        tasks[task["task_uuid"]] = name
        kafka.send(stack.tasks, task)
    n = len(cases)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == n, timeout, f"all {n} offsets committed")
    results = {tasks[r["task_uuid"]]: r for r in kafka.results(stack.results)}
    assert sorted(results) == sorted(cases), "one result per file"
    return results


def refusals_dead_lettered_without_a_restart(stack, kafka, processor, cases: dict) -> None:
    refused = [name for name, (_, refusal) in cases.items() if refusal]
    assert len(kafka.read_all(stack.dead_letter)) == len(refused), "each refusal has its dead letter"
    assert processor.proc.poll() is None and len(processor.events("engine starting")) == 1, \
        "no restart over one file"
    processor.signal(signal.SIGTERM)
    assert processor.wait_exit(60) == 0  # a bound that ends the test, not a stop-time goal
