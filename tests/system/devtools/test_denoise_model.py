"""UVR's real VR model UVR-DeNoise-Lite, through uvrd's engine: it loads, and takes noise out.

What it removes was surveyed first (3 s of the excerpt's vocals plus noise 15 dB down; noise-stem
SDR against the noise): low rumble almost entirely (brown noise, power falling 6 dB an octave:
27 dB), mains hum well (10 dB), pink noise a little (4 dB), white noise, hiss and crackle not at all
(0 dB).  So the test adds rumble.  On this input the noise stem scores 27.0 dB against the noise and
the cleaned stem 42.0 dB against the voice, up from 15.0 dB for the noisy input.  The floors sit
10 dB under those: far above what a no-op (0 dB noise stem, +0 dB on the voice) or swapped stems
(about -15 dB) would score, and clear of anything but a different model or a broken path.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from support import separate_in_engine
from devtools import sdr
from uvrd.processor.engine_protocol import Separated

pytestmark = pytest.mark.slow

RATE = 44100
SECONDS = 3
NOISE_DB = -15.0


def _rumble(frames: int, seed: int = 14) -> np.ndarray:
    """Brown noise, stereo, unit RMS: white noise shaped to fall 6 dB per octave."""
    white = np.random.default_rng(seed).standard_normal((frames, 2))
    freqs = np.fft.rfftfreq(frames, 1 / RATE)
    freqs[0] = freqs[1]
    brown = np.fft.irfft(np.fft.rfft(white, axis=0) / freqs[:, None], n=frames, axis=0)
    return (brown / np.sqrt(np.mean(brown ** 2))).astype(np.float32)


@pytest.fixture(scope="module")
def noisy_voice(musdb, tmp_path_factory):
    voice = musdb.reference("vocals")[:RATE * SECONDS]
    noise = _rumble(len(voice)) * np.sqrt(np.mean(voice ** 2)) * 10 ** (NOISE_DB / 20)
    # A name with a parenthesised part, as users' files have: audio-separator writes it into the stem
    # file names, beside the stem's own "(Noise)".
    path = tmp_path_factory.mktemp("noisy") / "take_(2)_final.wav"
    soundfile.write(str(path), voice + noise, RATE, subtype="PCM_16")
    noisy = sdr.read_audio(path).samples  # as quantised
    return path, voice, noisy - voice


@pytest.fixture(scope="module")
def separated(denoise_models, noisy_voice, tmp_path_factory):
    path, _, _ = noisy_voice
    result = separate_in_engine(denoise_models.model_dir, denoise_models.model, path,
                                tmp_path_factory.mktemp("denoise-out")).result
    assert isinstance(result, Separated), result
    return result.stems


def test_the_stems_are_noise_and_no_noise(separated, denoise_models):
    assert sorted(separated) == sorted(denoise_models.model.stems) == ["no_noise", "noise"]


def test_the_noise_stem_holds_the_noise_and_the_other_the_voice(separated, noisy_voice, record_property):
    path, voice, noise = noisy_voice
    noise_stem = sdr.read_audio(separated["noise"]).samples
    cleaned = sdr.read_audio(separated["no_noise"]).samples
    # Scored over the samples the stems have: their missing last partial hop is the next test's.
    frames = len(noise_stem)
    voice, noise, cleaned = voice[:frames], noise[:frames], cleaned[:frames]
    before = sdr.sdr(voice, sdr.read_audio(path).samples[:frames])
    noise_score, voice_score = sdr.sdr(noise, noise_stem), sdr.sdr(voice, cleaned)
    record_property("summary", f"UVR-DeNoise-Lite: noise stem {noise_score:.1f} dB, voice {before:.1f} -> "
                               f"{voice_score:.1f} dB")
    assert noise_score > 17.0
    assert voice_score > before + 17.0
    assert sdr.sdr(noise, cleaned) < 0 < sdr.sdr(noise, noise_stem), "not swapped"


def test_stems_keep_rate_channels_and_all_but_the_last_partial_hop(separated, noisy_voice):
    """audio-separator's VR path inverts its STFT without the input's length, so a stem ends at
    the last whole hop (1024 samples): up to 23 ms short.  Anything shorter is a truncation."""
    _, voice, _ = noisy_voice
    for stem, path in separated.items():
        audio = sdr.read_audio(path)
        assert (audio.rate, audio.channels) == (RATE, 2), stem
        assert len(voice) - 1024 < audio.frames <= len(voice), stem
