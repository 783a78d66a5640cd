"""Long inputs in chunks (uvrd/processor/long_audio.py), without a model: a separation that gives
back its input must come back sample for sample through the chunks, the crossfades and the encode,
so the chunks are aligned and the two gains of each crossfade sum to one."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from uvrd.processor import audio_probe, long_audio

RATE = 44100


def write(path, audio, subtype="FLOAT"):
    soundfile.write(path, audio, RATE, subtype=subtype)
    return str(path)


def music(seconds: float, seed: int = 1) -> np.ndarray:
    """A tone gliding over noise: any misplaced sample shows."""
    t = np.arange(int(seconds * RATE)) / RATE
    noise = np.random.default_rng(seed).normal(0, 0.05, (len(t), 2))
    tone = 0.4 * np.sin(2 * np.pi * (220 + 30 * t) * t)
    return (noise + tone[:, None]).astype(np.float32)


def identity_separation(source, plan, workdir, scale=(1.0, 0.5), normalization=0.9):
    """Each chunk's 'stems' are the chunk itself times each scale, as a model would write them."""
    chunk_dir = workdir / "chunks"
    chunk_dir.mkdir()
    stitcher = long_audio.Stitcher(str(workdir), RATE, plan.frames(RATE)[1])
    seen = []
    for chunk in long_audio.chunks(str(source), RATE, plan, str(chunk_dir)):
        audio, _ = soundfile.read(chunk.path, dtype="float32")
        seen.append(chunk)
        stitcher.add(chunk, {name: write(chunk_dir / f"{name}.wav", audio * k)
                             for name, k in zip(("a", "b"), scale)})
    stems = stitcher.finish(str(workdir), "wav", 32, normalization, None)
    return {name: soundfile.read(path, dtype="float32")[0] for name, path in stems.items()}, seen


def test_a_separation_that_gives_back_its_input_does_so_through_the_chunks(tmp_path):
    original = music(25.0)
    source = write(tmp_path / "in.wav", original)
    plan = long_audio.Chunking(seconds=10, overlap=2)
    stems, chunks = identity_separation(source, plan, tmp_path)
    assert [c.frames for c in chunks] == [12 * RATE, 12 * RATE, 5 * RATE]
    assert [c.last for c in chunks] == [False, False, True]
    assert plan.count(len(original), RATE) == 3
    for name, k in (("a", 1.0), ("b", 0.5)):
        assert stems[name].shape == original.shape
        # 24-bit FLAC under 18 dB of headroom in between: 2**-21 of full scale.
        assert np.abs(stems[name] - original * k).max() < 2e-6, name


def test_a_stem_over_the_threshold_is_normalised_once_from_its_whole_peak(tmp_path):
    original = music(25.0)
    original[RATE * 17] = [0.75, -0.75]  # the whole's peak, in the second chunk
    source = write(tmp_path / "in.wav", original)
    stems, _ = identity_separation(source, long_audio.Chunking(10, 2), tmp_path, scale=(2.0, 1.0))
    # 1.5 over 0.9: the whole stem scaled by 0.6, the same in every chunk.
    assert np.abs(stems["a"] - original * 2.0 * 0.6).max() < 2e-6
    assert np.abs(stems["b"] - original).max() < 2e-6


def test_the_crossfade_gains_sum_to_one_and_run_from_the_old_chunk_to_the_new():
    fade = long_audio.crossfade_in(1000)
    assert fade[0] == 0 and fade[-1] == pytest.approx(1)
    assert np.all(np.diff(fade) >= 0)
    assert np.allclose(fade + (1 - fade), 1)


def test_chunking_starts_only_past_a_chunk_and_its_overlap():
    plan = long_audio.Chunking(seconds=300, overlap=10)
    assert not plan.needed(310) and plan.needed(310.1) and plan.needed(None)
    assert plan.count(7200 * RATE, RATE) == 24


def test_the_survey_finds_the_true_length_and_peak_and_refuses_past_the_limit(tmp_path):
    audio = music(12.0)
    audio[RATE * 5] = [0.0, 0.875]
    source = write(tmp_path / "in.flac", audio, subtype="PCM_24")
    found = long_audio.survey(source, RATE, max_seconds=60, declared=None)
    assert (found.frames, found.rate) == (len(audio), RATE)
    assert found.peak == pytest.approx(0.875, abs=1e-6)
    with pytest.raises(audio_probe.Unusable, match=r"longer than this processor.s limit of 10 s .*; its header says 12 s"):
        long_audio.survey(source, RATE, max_seconds=10, declared=12.0)


def test_input_gain_is_audio_separators_normalisation_of_a_whole_input():
    assert long_audio.input_gain(1.8, 0.9, None) == pytest.approx(0.5)
    assert long_audio.input_gain(0.5, 0.9, None) == 1.0
    assert long_audio.input_gain(0.1, 0.9, 0.4) == pytest.approx(4.0)
