"""The engine child names each stem it returns, run for real (a tiny MDX model, audio-separator, ffmpeg)."""

from __future__ import annotations

import uuid

from support import wait_until
from uvrd.devtools import tinymodel
from uvrd.engine import Engine, EngineSettings, Job


def test_stems_outside_the_known_names_are_named_whatever_the_input_is_called(tmp_path):
    """audio-separator names such a stem's file ``<input>_(<Stem>)_<model>``: the input's own name may
    hold ``_(...)_`` too, and two stems must not both be taken for it (one would be lost)."""
    model = tinymodel.install(tmp_path / "models", primary_stem="Noise")  # Noise and No Noise: not known names
    engine = Engine(EngineSettings(model_dir=str(tmp_path / "models"), output_dir=str(tmp_path / "out"),
                                   models=(model.filename,), output_format="wav", mdx_hop_length=tinymodel.HOP_LENGTH,
                                   mdx_segment_size=tinymodel.SEGMENT_SIZE, mdx_batch_size=1))
    audio = tinymodel.write_sample(tmp_path / "take_(2)_final mix.wav", seconds=1)
    engine.start()
    try:
        wait_until(lambda: engine.poll_ready(0.5), 60, "the model to load")
        engine.submit(Job(str(uuid.uuid4()), str(audio), model.filename, "wav", str(tmp_path / "job")))
        result = wait_until(lambda: engine.poll_result(0.5), 60, "the separation")
    finally:
        engine.close()
    assert result.ok, result.error
    assert sorted(result.stems) == ["no_noise", "noise"] == sorted(model.stems)
    assert len({*result.stems.values()}) == 2
