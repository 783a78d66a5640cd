"""Every architecture audio-separator serves, through the whole service: one processor holding an
MDX model (real: Spleeter 2-stems), a VR model (real: UVR-DeNoise-Lite), MDXC models (tiny
generated BS-Roformer, Mel-Band Roformer and MDX23C) and Demucs v4 (tiny generated, 4 and 6
sources); each task names its model.  Every stem arrives under its own name in the webhook, the
status answer and the result record, downloads through its link and keeps the input's rate,
channels and length, with local files and with a bucket (SeaweedFS).

VR's stems end at the last whole hop of its STFT (1024 samples): up to 1023 samples short.  Every
other architecture returns exactly the input's length.
"""

from __future__ import annotations

import pytest
from separation_service import SeparationService
from support import real_assets

from devtools import denoise_model, sdr, spleeter_model, tiny_architectures
from devtools.model_catalogue import InstalledModel

pytestmark = pytest.mark.slow

CLIP_FRAMES = 3 * 44100 + 220  # no hop of these models divides it: a dropped partial frame shows
SHORTER_BY_AT_MOST = {"VR": 1023}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("all-models")


@pytest.fixture(scope="module")
def models(models_dir) -> dict[str, InstalledModel]:
    """Every model in one directory: the real ones (built once into the asset cache), then the tiny ones."""
    return {"spleeter": real_assets(lambda: spleeter_model.install(models_dir)),
            "denoise": real_assets(lambda: denoise_model.install(models_dir)),
            **tiny_architectures.install_all(models_dir)}


@pytest.fixture(scope="module")
def clip(musdb, tmp_path_factory):
    """The first 3 s of the MUSDB excerpt: music, so every model has something to separate."""
    import soundfile

    audio = sdr.read_audio(musdb.mixture)
    path = tmp_path_factory.mktemp("clip") / "clip.wav"
    soundfile.write(str(path), audio.samples[:CLIP_FRAMES], audio.rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module", params=["local", "s3"])
def service(request, module_stacks, models, models_dir):
    storage = None
    if request.param == "s3":
        storage = request.getfixturevalue("objectstore").storage_settings(prefix="architectures")
    svc = SeparationService(module_stacks(f"architectures-{request.param}"), list(models.values()),
                            models_dir, storage=storage)
    yield request.param, svc
    svc.close()


def test_the_processor_serves_every_architecture(models):
    assert {m.architecture for m in models.values()} == {"MDX", "VR", "MDXC", "Demucs"}
    assert {len(m.stems) for m in models.values() if m.architecture == "Demucs"} == {4, 6}


@pytest.mark.parametrize("name", ["spleeter", "denoise", "bs_roformer", "mel_band_roformer", "mdx23c",
                                  "htdemucs", "htdemucs_6s"])
def test_each_model_gives_its_named_stems_end_to_end(service, models, clip, name, kafka):
    mode, svc = service
    model = models[name]
    task = svc.separate(clip, model=model.filename, output_format="wav")
    assert sorted(task.webhook["stems"]) == sorted(task.status["stems"]) == sorted(model.stems), name
    assert task.status["model"] == model.filename
    [result] = [r for r in kafka.results(svc.stack.results) if r["task_uuid"] == task.task_uuid]
    assert sorted(result["stems"]) == sorted(model.stems)
    if mode == "s3":
        assert result["storage"] == "s3" and all("X-Amz-Signature=" in url for url in task.webhook["stems"].values())
    for stem, path in task.stems.items():
        audio = sdr.read_audio(path)
        assert (audio.rate, audio.channels) == (44100, 2), f"{name} {stem}"
        short = CLIP_FRAMES - audio.frames
        assert 0 <= short <= SHORTER_BY_AT_MOST.get(model.architecture, 0), f"{name} {stem}: {audio.frames} frames"
        assert float(abs(audio.samples).max()) > 0, f"{name} {stem} is silent"
