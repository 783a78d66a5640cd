"""Every architecture audio-separator serves beside MDX, run through uvrd's real engine child.

The tiny generated checkpoints (BS-Roformer, Mel-Band Roformer and MDX23C, served as MDXC; HTDemucs
with 4 and 6 sources) are installed side by side in one model directory, each is loaded by its
own engine with no network, and a 3 s clip is separated into exactly the model's stems.  None of
these architectures pads its output: MDX23C cuts its padding off, the Roformers add their windows
into a buffer of the input's length, Demucs trims to it, so every stem has the input's length to
the sample (the clip's length is a multiple of none of their STFT hops, 441, 512 and 1024).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from support import separate_in_engine
from devtools import tiny_architectures, tinymodel
from devtools.model_catalogue import InstalledModel
from uvrd.processor.engine_protocol import Separated as SeparatedStems

# What each model must give, as audio-separator names the stems, lower-cased.
EXPECTED_STEMS = {
    "bs_roformer": ("vocals", "instrumental"),  # a target (Vocals) and its residual
    "mel_band_roformer": ("vocals", "other"),  # two outputs, named as in the YAML
    "mdx23c": ("vocals", "instrumental"),
    "htdemucs": ("drums", "bass", "other", "vocals"),
    "htdemucs_6s": ("drums", "bass", "other", "vocals", "guitar", "piano"),
}
CLIP_SECONDS = 3.005  # 132520 frames
# The engine child's environment.  Any request it makes goes to a closed port: a model that is not
# wholly installed fails here instead of being fetched from the internet (one torch thread, as in every
# process the tests start: tests/conftest.py).
CHILD_ENV = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> tuple[Path, dict[str, InstalledModel]]:
    model_dir = tmp_path_factory.mktemp("tiny-architectures")
    return model_dir, tiny_architectures.install_all(model_dir)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return tinymodel.write_sample(tmp_path_factory.mktemp("clip") / "clip.wav", seconds=CLIP_SECONDS)


@dataclass(frozen=True)
class Separated:
    name: str
    model: InstalledModel
    load_info: dict
    result: SeparatedStems


@pytest.fixture(scope="module", params=sorted(EXPECTED_STEMS))
def separated(request, tiny_models, clip, tmp_path_factory) -> Separated:
    """One engine per model: load it, separate the clip once, stop."""
    model_dir, installed = tiny_models
    model = installed[request.param]
    run = separate_in_engine(model_dir, model, clip, tmp_path_factory.mktemp(f"out-{request.param}"),
                             child_env=CHILD_ENV)
    return Separated(request.param, model, run.load_info, run.result)


def test_each_model_loads_offline_and_gives_exactly_its_stems(separated, record_property):
    result = separated.result
    assert isinstance(result, SeparatedStems), result
    assert sorted(result.stems) == sorted(EXPECTED_STEMS[separated.name])
    # uvrd's own names for audio-separator's stems, in the job's work directory.
    for stem, path in result.stems.items():
        assert Path(path).name == f"{stem}.wav" and Path(path).parent.name == "job"
    record_property("summary", f"{separated.name}: {separated.model.architecture}, "
                               f"load {separated.load_info['model_load_s']:.2f} s, "
                               f"{CLIP_SECONDS:g} s clip separated in {result.seconds:.2f} s")


def test_the_installer_names_the_stems_the_engine_gives(separated):
    """What other code reads off InstalledModel (the stems a result will carry, in the model's order)."""
    assert separated.model.stems == EXPECTED_STEMS[separated.name]
    assert separated.model.architecture == ("Demucs" if "demucs" in separated.name else "MDXC")


def test_each_stem_keeps_the_inputs_length_rate_and_channels(separated, clip):
    source = sf.info(clip)
    for stem, path in separated.result.stems.items():
        info = sf.info(path)
        assert (info.frames, info.samplerate, info.channels) == (source.frames, source.samplerate,
                                                                 source.channels), stem


def test_every_stem_is_an_output_of_its_own(separated):
    """No stem is another written twice under two names, or silence."""
    audio = {stem: sf.read(path, dtype="int16")[0] for stem, path in separated.result.stems.items()}
    for stem, samples in audio.items():
        assert np.abs(samples).max() > 0, f"{stem} is silent"
    for (a, x), (b, y) in itertools.combinations(audio.items(), 2):
        assert not np.array_equal(x, y), f"{a} and {b} are the same audio"
