"""A task's separation options end to end: submitted with the audio, checked at the api (400) and
at the processor (a clear failure, never a crash), and seen in the stems a user downloads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests
import soundfile
from separation_service import AUTH
from support import wait_until

from devtools import tinymodel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return tinymodel.write_sample(tmp_path_factory.mktemp("options") / "sample.wav", seconds=3)


def post(service, audio, **form) -> requests.Response:
    with open(audio, "rb") as f:
        return requests.post(f"{service.url}/v1/tasks", headers=AUTH, files={"audio": (audio.name, f)},
                             data={"hook_url": service.receiver.url, **form}, timeout=60)


def failure_of(service, task_uuid: str) -> dict:
    def hook():
        return next((json.loads(d["body"]) for d in service.receiver.successes()
                     if json.loads(d["body"])["task_uuid"] == task_uuid), None)
    return wait_until(hook, 120, f"the webhook of {task_uuid}", interval=0.1)


def peak(path) -> float:
    return float(np.abs(soundfile.read(path)[0]).max())


def test_single_stem_custom_name_sample_rate_and_bit_depth_reach_the_downloaded_stem(service, sample):
    options = {"single_stem": "vocals", "stem_names": {"vocals": "voice"}, "sample_rate": 22050, "bit_depth": 24}
    done = service.separate(sample, output_format="wav", options=json.dumps(options))
    assert set(done.webhook["stems"]) == {"voice"} and set(done.stems) == {"voice"}
    info = soundfile.info(done.stems["voice"])
    assert (info.samplerate, info.subtype) == (22050, "PCM_24")
    assert abs(info.duration - 3.0) < 0.05


def test_normalization_lowers_every_stems_peak_to_the_threshold(service, sample):
    plain = service.separate(sample, output_format="wav")
    loudest = max(peak(p) for p in plain.stems.values())
    assert loudest > 0.25, "the sample must be loud enough for the threshold to matter"
    threshold = round(loudest / 2, 3)
    lowered = service.separate(sample, output_format="wav", options=json.dumps({"normalization_threshold": threshold}))
    assert all(peak(p) <= threshold + 1e-3 for p in lowered.stems.values())
    # The model keeps its settings for the next task: options last one job.
    again = service.separate(sample, output_format="wav")
    assert max(peak(p) for p in again.stems.values()) == pytest.approx(loudest, abs=1e-3)


@pytest.mark.parametrize("options, words", [
    ({"mdx_overlap": 2}, "mdx_overlap must be from 0.001 to 0.999"),
    ({"bit_depth": 24}, "bit_depth needs a lossless output_format"),  # with output_format mp3 below
    ({"turbo": 1}, "unknown option 'turbo'"),
])
def test_options_out_of_bounds_are_a_400_naming_the_option(service, sample, options, words):
    response = post(service, sample, output_format="mp3", options=json.dumps(options))
    assert response.status_code == 400 and words in response.json()["error"], response.text


def test_an_option_for_another_architecture_fails_the_task_clearly_and_the_engine_serves_on(service, sample):
    starts = len(service.processor.events("engine starting"))
    response = post(service, sample, options=json.dumps({"vr_aggression": 20}))
    assert response.status_code == 202
    hook = failure_of(service, response.json()["task_uuid"])
    assert hook["status"] == "failed"
    assert "vr_aggression is for VR models; this task's model is a MDX model" in hook["error_message"]
    assert service.separate(sample).webhook["status"] == "success"
    assert len(service.processor.events("engine starting")) == starts


def test_a_task_message_with_options_out_of_bounds_fails_with_a_clear_error(service, kafka, sample):
    task = service.stack.task(service.stack.spool_copy(sample), hook_url=service.receiver.url,
                              options={"demucs_shifts": 99})
    kafka.send(service.stack.tasks, task)
    hook = failure_of(service, task["task_uuid"])
    assert hook["status"] == "failed"
    assert hook["error_message"] == ("task field 'options' is refused: option demucs_shifts must be from 0 to 20, "
                                     "not 99")


def test_submit_sends_each_file_as_its_own_task_with_the_options_and_sums_them_up(service, sample, tmp_path):
    import os
    import subprocess
    import sys

    from separation_service import TOKEN

    other = tinymodel.write_sample(tmp_path / "other.wav", seconds=2)
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are not samples\n" * 50)
    out = tmp_path / "stems"
    run = subprocess.run([sys.executable, "-m", "uvrd", "submit", str(sample), str(not_audio), str(other),
                          "--option", "single_stem=vocals", "--option", "bit_depth=16", "--output-format", "flac",
                          "--output", str(out)],
                         capture_output=True, text=True, timeout=600,
                         env={**os.environ, "UVRD_API_URL": service.url, "UVRD_API_TOKEN": TOKEN})
    # The refused file is the worst outcome, and it stops nothing else.
    assert run.returncode == 2, run.stdout + run.stderr
    assert "3 files: 1 not accepted, 2 succeeded" in run.stdout, run.stdout
    assert "notes.wav" in run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["other_vocals.flac", "sample_vocals.flac"]
    assert all(soundfile.info(p).subtype == "PCM_16" for p in out.iterdir())


def test_custom_names_never_lose_a_stem_a_swap_keeps_each_and_a_clash_is_refused(service, kafka, sample):
    plain = service.separate(sample, output_format="wav")
    assert set(plain.stems) == {"vocals", "instrumental"}
    swapped = service.separate(sample, output_format="wav",
                               options=json.dumps({"stem_names": {"vocals": "instrumental",
                                                                  "instrumental": "vocals"}}))
    assert set(swapped.stems) == {"vocals", "instrumental"}
    for name, other in (("vocals", "instrumental"), ("instrumental", "vocals")):
        assert np.array_equal(soundfile.read(swapped.stems[name])[0], soundfile.read(plain.stems[other])[0])
    clash = {"stem_names": {"vocals": "instrumental"}}
    sentence = ("option stem_names would give the vocals and instrumental stems one name, 'instrumental': "
                "rename instrumental too (names may be swapped)")
    # The api knows the model's stems once its worker reported them: a 400 at submit.
    wait_until(lambda: service.get("/v1/models")["models"][0]["stems"], 60, "the model's worker to report its stems")
    response = post(service, sample, options=json.dumps(clash))
    assert response.status_code == 400 and sentence in response.json()["error"], response.text
    # A task message no api checked: the processor fails it with the same sentence.
    task = service.stack.task(service.stack.spool_copy(sample), hook_url=service.receiver.url, options=clash)
    kafka.send(service.stack.tasks, task)
    hook = failure_of(service, task["task_uuid"])
    assert hook["status"] == "failed" and sentence in hook["error_message"]
