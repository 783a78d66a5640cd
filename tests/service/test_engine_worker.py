"""The engine child names each stem it returns, run for real (a tiny MDX model, audio-separator, ffmpeg)."""

from __future__ import annotations

import resource

import pytest
from support import separate_in_engine, wait_until

from devtools import tiny_mdxc, tinymodel
from devtools.children import address_space_mb
from uvrd.processor.engine import Engine, EngineDied, EngineSettings
from uvrd.processor.engine_protocol import Job, JobFailed, Separated


def test_stems_outside_the_known_names_are_named_whatever_the_input_is_called(tmp_path):
    """audio-separator names such a stem's file ``<input>_(<Stem>)_<model>``: the input's own name may
    hold ``_(...)_`` too, and two stems must not both be taken for it (one would be lost)."""
    # Crowd and No Crowd (UVR's crowd models): not among KNOWN_STEMS, so named from the file name.
    model = tinymodel.install(tmp_path / "models", primary_stem="Crowd")
    audio = tinymodel.write_sample(tmp_path / "take_(2)_final mix.wav", seconds=1)
    result = separate_in_engine(tmp_path / "models", model, audio, tmp_path / "out").result
    assert isinstance(result, Separated), result
    assert sorted(result.stems) == ["crowd", "no_crowd"] == sorted(model.stems)
    assert len({*result.stems.values()}) == 2


def test_a_checkpoint_audio_separator_gives_up_on_is_a_failed_load_that_says_so(tmp_path):
    """audio-separator ends an MDXC/Roformer load that fails with sys.exit(1): the engine reports the
    failed load and its model, as for any other model that will not load, instead of dying mute."""
    model = tiny_mdxc.install_bs_roformer(tmp_path / "models")
    import torch

    torch.save({"not": torch.zeros(1)}, tmp_path / "models" / model.filename)  # no weight of its network
    engine = Engine(EngineSettings(model_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "out"),
                                   models=(model.filename,), output_format="wav", mdx_hop_length=1024,
                                   mdx_segment_size=256, mdx_batch_size=1))
    engine.start()
    try:
        with pytest.raises(EngineDied) as died:
            wait_until(lambda: engine.poll_ready(0.5), 120, "the load to end")
    finally:
        engine.close()
    assert f"could not load model {model.filename!r}" in str(died.value)
    assert "audio-separator gave up loading it" in str(died.value)


def test_a_separation_the_host_cannot_fit_fails_in_one_sentence_and_the_same_engine_goes_on(tmp_path):
    """A task whose separation cannot get the memory it needs fails (a JobFailed: dead-lettered, never
    retried) with the sentence that says so, and the engine child that failed it separates the next
    task: one input too large for the host never restarts the engine or crash-loops the unit.  The
    shortage is real: the child's address space is capped (RLIMIT_AS) 300 MiB above what it holds once
    warm, room for the input's samples (101 MiB) but not for the model's steps over them (here the
    allocation failed in audio-separator's demix; wherever it fails, numpy, torch or onnxruntime)."""
    model = tinymodel.install(tmp_path / "models")
    big = tinymodel.write_sample(tmp_path / "five minutes.wav", seconds=300)  # 106 MB of float32 samples
    small = tinymodel.write_sample(tmp_path / "one second.wav", seconds=1)
    settings = dict(model.processor_settings)
    engine = Engine(EngineSettings(model_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "out"),
                                   models=(model.filename,), output_format="wav",
                                   mdx_hop_length=settings.get("mdx_hop_length", 1024),
                                   mdx_segment_size=settings.get("mdx_segment_size", 256), mdx_batch_size=1))
    engine.start()
    try:
        wait_until(lambda: engine.poll_ready(0.5), 180, "the engine to load the model", interval=0)
        pid = engine.pid
        assert pid is not None
        limit = int(((address_space_mb(pid) or 0) + 300) * 2**20)
        soft, hard = resource.prlimit(pid, resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
        engine.submit(Job("too-big", str(big), model.filename, "wav", str(tmp_path / "out" / "too-big")))
        failed = wait_until(lambda: engine.poll_result(1.0), 240, "the large input's outcome", interval=0)
        resource.prlimit(pid, resource.RLIMIT_AS, (soft, hard))
        assert isinstance(failed, JobFailed), failed
        assert failed.error.startswith("separation failed: the model ran out of memory separating this input"), failed
        assert "\n" not in failed.error

        engine.submit(Job("next", str(small), model.filename, "wav", str(tmp_path / "out" / "next")))
        separated = wait_until(lambda: engine.poll_result(1.0), 120, "the next input's stems", interval=0)
        assert isinstance(separated, Separated), separated
        assert sorted(separated.stems) == sorted(model.stems)
        assert engine.pid == pid and engine.alive()
    finally:
        engine.close()
