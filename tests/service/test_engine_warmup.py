"""The warm-up separation: every model separates a short clip once loaded, before it serves a task.

The module's own contract first (the clip, the scratch directory, the error), then the processor
from outside: READY=1 only after the warm-up, nothing left behind, a model that cannot separate
stopped the way a model that cannot load is, and extra models warmed up when first named.
"""

from __future__ import annotations

import errno
import os
import signal
import statistics
from pathlib import Path

import pytest

from support import wait_until
from devtools import model_catalogue, tinymodel
from uvrd.processor import audio_probe, engine_warmup
from uvrd.processor.engine_child import _no_space

OTHER_MODEL = "UVRD-Other-Tiny.onnx"
# Loads (onnxruntime takes the file), but the catalogue gives the wrong spectrogram height
# for its graph: every separation fails, as with a model file that does not match its settings.
MISMATCHED_MODEL = "UVRD-Mismatched-Tiny.onnx"


@pytest.fixture(scope="module")
def short_audio(tmp_path_factory):
    return tinymodel.write_sample(tmp_path_factory.mktemp("short") / "short.wav", seconds=2)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """The tiny model, a second copy of it under another name, and one that cannot separate."""
    d = tmp_path_factory.mktemp("models")
    tinymodel.install(d)
    tinymodel.install(d, name=OTHER_MODEL)
    path = d / MISMATCHED_MODEL
    path.write_bytes(tinymodel.build_onnx(gain=0.25))  # other bytes: a hash, and parameters, of its own
    model_catalogue.list_model(d, "mdx_download_list", "MDX-Net Model: UVRD-Mismatched-Tiny", MISMATCHED_MODEL)
    model_catalogue.describe_by_hash(d, "mdx", path, {
        "compensate": 1.0, "mdx_dim_f_set": tinymodel.DIM_F // 2, "mdx_dim_t_set": tinymodel.DIM_T_POW,
        "mdx_n_fft_scale_set": tinymodel.N_FFT, "primary_stem": "Vocals"})
    return d


@pytest.fixture
def scratch_root(tmp_path) -> Path:
    """The engine's TMPDIR: where its warm-ups make (and must remove) their directories."""
    d = tmp_path / "tmp"
    d.mkdir()
    return d


# -- the module ------------------------------------------------------------------------------------
def test_the_clip_is_a_second_of_stereo_audio_a_task_would_accept(tmp_path):
    clip = engine_warmup.write_clip(tmp_path / "clip.wav")
    info = audio_probe.probe(str(clip))
    audio_probe.check(info, max_seconds=2)
    assert info.channels == 2 and info.rate == engine_warmup.CLIP_RATE
    assert info.seconds == pytest.approx(engine_warmup.CLIP_SECONDS, abs=0.01)


def test_a_warm_up_times_the_separation_and_removes_its_clip_and_stems(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    seen = {}

    def separate(clip: str, workdir: str) -> dict[str, str]:
        seen.update(clip=clip, workdir=workdir)
        stems = {name: os.path.join(workdir, f"{name}.wav") for name in ("vocals", "instrumental")}
        for path in stems.values():
            Path(path).write_bytes(Path(clip).read_bytes())
        return stems

    warmup = engine_warmup.run("m.onnx", separate)
    assert warmup.model == "m.onnx" and warmup.stems == ("instrumental", "vocals") and warmup.seconds >= 0
    assert Path(seen["clip"]).parent == Path(seen["workdir"]).parent == Path(warmup.directory)
    assert Path(warmup.directory).parent == tmp_path and list(tmp_path.iterdir()) == [], "nothing left behind"


def test_a_failed_warm_up_names_the_model_keeps_the_cause_and_hides_its_directory(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    def separate(clip: str, workdir: str) -> dict[str, str]:
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(workdir, "vocals.wav"))

    with pytest.raises(engine_warmup.WarmupFailed) as caught:
        engine_warmup.run("m.onnx", separate)
    message = str(caught.value)
    assert message.startswith("model 'm.onnx' loaded, but its warm-up separation failed: OSError")
    assert "stems/vocals.wav" in message and str(tmp_path) not in message
    assert _no_space(caught.value), "a full disk stays visible through the warm-up's error"
    assert list(tmp_path.iterdir()) == [], "nothing left behind"


# -- the processor ---------------------------------------------------------------------------------
def warmups(daemon) -> list[dict]:
    return daemon.events("model warmed up")


def test_ready_comes_after_the_warm_up_which_leaves_nothing_behind(stack, kafka, short_audio, scratch_root,
                                                                   record_property):
    p = stack.start(env={"TMPDIR": str(scratch_root)})
    p.wait_ready()
    model = tinymodel.TINY_MODEL
    lines = p.notify.lines()
    assert lines.index(f"STATUS=loading model {model}") < lines.index(f"STATUS=warming up model {model}") \
        < lines.index("READY=1"), lines
    events = [e.get("event") for e in p.log_events()]
    assert events.index("engine warming up") < events.index("model warmed up") < events.index("engine ready") \
        < events.index("processor ready"), events
    [warmup] = warmups(p)
    assert warmup["model"] == model and warmup["output_format"] == "wav"
    assert warmup["stems"] == ["instrumental", "vocals"], "the warm-up ran the whole separation, stems written"
    [ready] = p.events("engine ready")
    assert ready["warmup_s"] == warmup["warmup_s"] > 0 and ready["model_load_s"] > 0
    assert Path(warmup["directory"]).parent == scratch_root and not Path(warmup["directory"]).exists(), \
        "the warm-up ran in a temporary directory of its own, then removed it"
    assert list(stack.spool.iterdir()) == [] and {f.name for f in stack.output.iterdir()} <= {".attempts"}, \
        "neither the spool nor the output directory is touched"

    tasks = [stack.task(stack.spool_copy(short_audio)) for _ in range(3)]
    for task in tasks:
        kafka.send(stack.tasks, task)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == len(tasks), 120, "the three commits")
    assert [r["success"] for r in kafka.results(stack.results)] == [True] * len(tasks)
    assert len(warmups(p)) == 1, "the warm-up runs once per load, not per task"
    # The figure, not a goal (that is `make bench`'s): the first task's engine time against the others'.
    seconds = [e["separation_s"] for e in wait_until(lambda: len(p.events("task succeeded")) == 3
                                                      and p.events("task succeeded"), 60, "the log")]
    record_property("summary", f"warm-up {warmup['warmup_s']:.2f} s; after READY, task 1 separated in "
                               f"{seconds[0]:.2f} s, tasks 2-3 in {statistics.median(seconds[1:]):.2f} s")
    p.signal(signal.SIGTERM)
    assert p.wait_exit(60) == 0  # a bound that ends the test, not a stop-time goal


def test_a_model_that_loads_but_cannot_separate_stops_the_unit_with_ex_config(stack, models, scratch_root):
    p = stack.start(config=stack.write_config("mismatched.toml", model=MISMATCHED_MODEL, model_dir=str(models)),
                    env={"TMPDIR": str(scratch_root)})
    assert p.wait_exit(120) == 78, "a config error: systemd does not restart it (RestartPreventExitStatus=78)"
    assert "READY=1" not in p.notify.lines()
    assert f"STATUS=warming up model {MISMATCHED_MODEL}" in p.notify.lines(), "it loaded; the warm-up failed"
    [error] = p.events("separation engine could not run")
    assert error["error"].startswith(f"model '{MISMATCHED_MODEL}' loaded, but its warm-up separation failed"), error
    assert "Got invalid dimensions for input" in error["error"]
    assert len(p.events("engine starting")) == 1, "not restarted: the same model would fail the same way"
    assert not list(scratch_root.glob("uvrd-warmup-*"))


def test_an_extra_model_is_warmed_up_when_a_task_first_names_it(stack, kafka, models, short_audio, scratch_root):
    config = stack.write_config("extras.toml", model_dir=str(models), extra_models=[OTHER_MODEL, MISMATCHED_MODEL])
    p = stack.start(config=config, env={"TMPDIR": str(scratch_root)})
    p.wait_ready()
    assert [w["model"] for w in warmups(p)] == [tinymodel.TINY_MODEL], "extra models load on first use"
    broken, other, again = (stack.task(stack.spool_copy(short_audio), model=m)
                            for m in (MISMATCHED_MODEL, OTHER_MODEL, OTHER_MODEL))
    for task in (broken, other, again):
        kafka.send(stack.tasks, task)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 3, 120, "the three commits")
    results = kafka.results(stack.results)
    assert [(r["task_uuid"], r["success"]) for r in results] == [
        (broken["task_uuid"], False), (other["task_uuid"], True), (again["task_uuid"], True)]
    assert f"model '{MISMATCHED_MODEL}' loaded, but its warm-up separation failed" in results[0]["error_message"]
    assert str(scratch_root) not in results[0]["error_message"]
    warmed = warmups(p)
    assert [(w["model"], w.get("task_uuid")) for w in warmed] == [
        (tinymodel.TINY_MODEL, None), (OTHER_MODEL, other["task_uuid"])], "warmed once, inside its first task"
    assert p.proc.poll() is None and len(p.events("engine starting")) == 1, "a broken extra fails its task only"
    assert not list(scratch_root.glob("uvrd-warmup-*"))
    p.signal(signal.SIGTERM)
    assert p.wait_exit(60) == 0  # a bound that ends the test, not a stop-time goal
