"""The SDR the quality tests measure with, and the stem reader they measure through."""

from __future__ import annotations

import math
import subprocess
import wave

import numpy as np
import pytest

from devtools import sdr


def _signal(frames=44100, channels=2, seed=0):
    return np.random.default_rng(seed).standard_normal((frames, channels)).astype(np.float32)


def test_sdr_is_signal_over_error_energy_in_db_over_both_channels():
    s = _signal()
    e = _signal(seed=1)
    e *= np.sqrt(np.sum(s.astype(np.float64) ** 2) / np.sum(e.astype(np.float64) ** 2) / 100)  # 1% of s's energy
    assert sdr.sdr(s, s + e) == pytest.approx(20.0, abs=1e-3)
    assert sdr.sdr(s, np.zeros_like(s)) == pytest.approx(0.0, abs=1e-9), "silence scores 0 dB"
    assert sdr.sdr(s, 0.5 * s) == pytest.approx(20 * math.log10(2), abs=1e-4), "a gain error is not forgiven"
    assert sdr.sdr(s, s) == math.inf


def test_an_error_in_one_channel_counts_against_the_whole():
    s = _signal()
    wrong_right = s.copy()
    wrong_right[:, 1] = 0
    assert sdr.sdr(s, wrong_right) == pytest.approx(10 * math.log10(np.sum(s.astype(np.float64) ** 2)
                                                                     / np.sum(s[:, 1].astype(np.float64) ** 2)))
    assert sdr.sdr(s, s[:, ::-1]) < 0, "swapped channels of unrelated content score below silence"


def test_shapes_must_match_and_fit_pads_a_short_estimate_with_silence():
    s = _signal(100)
    with pytest.raises(ValueError, match="differ in shape"):
        sdr.sdr(s, s[:90])
    short = sdr.fit(s[:90], 100)
    assert short.shape == s.shape and not short[90:].any() and np.array_equal(short[:90], s[:90])
    assert sdr.sdr(s, short) < sdr.sdr(s, s[:100]), "a truncated stem loses SDR for what it lacks"
    assert np.array_equal(sdr.fit(np.concatenate([s, s]), 100), s)


@pytest.mark.parametrize("rate,channels", [(48000, 1), (44100, 2), (22050, 6)])
def test_read_audio_keeps_the_files_rate_channels_and_samples(tmp_path, rate, channels):
    pcm = (np.random.default_rng(rate).integers(-32768, 32767, (rate // 10, channels))).astype("<i2")
    path = tmp_path / "x.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    audio = sdr.read_audio(path)
    assert (audio.rate, audio.channels, audio.frames) == (rate, channels, rate // 10)
    assert np.array_equal(audio.samples, pcm / 32768.0)


def test_read_audio_decodes_compressed_stems(tmp_path):
    path = tmp_path / "x.flac"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5",
                    "-ar", "32000", "-ac", "2", str(path)], check=True)
    audio = sdr.read_audio(path)
    assert (audio.rate, audio.channels, audio.frames) == (32000, 2, 16000)
    with pytest.raises(ValueError, match="could not decode"):
        (tmp_path / "bad.flac").write_bytes(path.read_bytes()[:200])
        sdr.read_audio(tmp_path / "bad.flac")
