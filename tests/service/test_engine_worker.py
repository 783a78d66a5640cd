"""The engine child names each stem it returns, run for real (a tiny MDX model, audio-separator, ffmpeg)."""

from __future__ import annotations


import pytest
from support import separate_in_engine, wait_until

from devtools import tiny_mdxc, tinymodel
from uvrd.processor.engine import Engine, EngineDied, EngineSettings
from uvrd.processor.engine_protocol import Separated


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
