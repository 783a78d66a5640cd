"""Several models in one task, and ensembles, as a user meets them: ``uvrd api``, processor and
uploader on a real broker with two tiny MDX models of different gains (so each gives other stems),
the stems fetched through the signed webhook's links and compared with what each model gives alone
and with audio-separator's own ensemble of the same models."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import requests
import soundfile
from separation_service import AUTH, SeparationService
from support import wait_until

from devtools import tinymodel

pytestmark = pytest.mark.slow

A, B = "UVRD-Tiny-A.onnx", "UVRD-Tiny-B.onnx"


@pytest.fixture(scope="module")
def pair_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    return d, [tinymodel.install(d, A, gain=0.5), tinymodel.install(d, B, gain=0.8)]


@pytest.fixture(scope="module")
def service(module_stack, pair_dir):
    d, models = pair_dir
    svc = SeparationService(module_stack, models, d, progress_interval=0.3)
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return tinymodel.write_sample(tmp_path_factory.mktemp("ensembles") / "sample.wav", seconds=10)


def samples(path) -> np.ndarray:
    return soundfile.read(path, dtype="float32")[0]


def snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    n = min(len(reference), len(other))  # audio-separator's spectral ensembles drop the last few hundred frames
    reference, other = reference[:n], other[:n]
    return float(10 * np.log10(np.sum(reference ** 2) / max(np.sum((reference - other) ** 2), 1e-20)))


ENSEMBLES = [("avg_wave", [1, 3]), ("uvr_max_spec", None), ("median_wave", None)]


@pytest.fixture(scope="module")
def library_ensembles(pair_dir, sample, tmp_path_factory) -> dict[str, dict[str, str]]:
    """audio-separator's own ensemble by each algorithm of ENSEMBLES: {algorithm: {stem: file}}."""
    run = subprocess.run([sys.executable, "-m", "devtools.library_ensemble", str(pair_dir[0]),
                          str(tinymodel.HOP_LENGTH), str(tinymodel.SEGMENT_SIZE), str(tmp_path_factory.mktemp("theirs")),
                          str(sample), json.dumps(ENSEMBLES), A, B], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_several_models_give_each_models_own_stems_under_its_name(service, sample):
    both = service.separate(sample, models=json.dumps([A, B]), output_format="wav")
    assert sorted(both.webhook["stems"]) == ["UVRD-Tiny-A.instrumental", "UVRD-Tiny-A.vocals",
                                             "UVRD-Tiny-B.instrumental", "UVRD-Tiny-B.vocals"]
    assert both.status["model"] == f"{A} + {B}"
    for model in (A, B):
        alone = service.separate(sample, model=model, output_format="wav")
        for stem, path in alone.stems.items():
            assert np.array_equal(samples(both.stems[f"{model.removesuffix('.onnx')}.{stem}"]), samples(path)), \
                (model, stem)
    # Two gains: two different separations, not one model's stems twice.
    assert not np.allclose(samples(both.stems["UVRD-Tiny-A.vocals"]), samples(both.stems["UVRD-Tiny-B.vocals"]))


@pytest.mark.parametrize("algorithm,weights", ENSEMBLES)
def test_an_ensemble_agrees_with_audio_separators_own(service, library_ensembles, sample, algorithm, weights):
    ensemble = {"models": [A, B], "algorithm": algorithm, **({"weights": weights} if weights else {})}
    ours = service.separate(sample, ensemble=json.dumps(ensemble), output_format="wav")
    assert sorted(ours.stems) == ["instrumental", "vocals"]
    assert ours.status["model"] == f"ensemble of {A} + {B}"
    theirs = library_ensembles[algorithm]
    agreement = {stem: snr_db(samples(theirs[stem]), samples(ours.stems[stem])) for stem in ours.stems}
    print(f"\nensemble {algorithm}{weights or ''}: agreement with audio-separator's own, "
          + ", ".join(f"{stem} {db:.1f} dB" for stem, db in sorted(agreement.items())))
    # 16-bit output: one step of rounding apart at most is about 75 dB here.
    assert all(db > 60 for db in agreement.values()), agreement
    alone = samples(service.separate(sample, model=A, output_format="wav").stems["vocals"])
    assert snr_db(alone, samples(ours.stems["vocals"])) < 30, "an ensemble, not model A alone"


@pytest.mark.parametrize("fields,error", [
    ({"ensemble": "no_such_preset"}, "'ensemble.preset' 'no_such_preset' is no preset"),
    ({"ensemble": "vocal_balanced"}, "the field 'ensemble' needs"),
    ({"models": json.dumps([A, "UVR-MDX-NET-Inst_HQ_4.onnx"])}, "the field 'models' needs 'UVR-MDX-NET-Inst_HQ_4.onnx'"),
    ({"ensemble": json.dumps({"models": [A, B], "algorithm": "median_wave", "weights": [1, 2]})},
     "'ensemble.weights' apply to avg_wave and avg_fft only"),
    ({"models": json.dumps([A] * 2)}, "names a model twice"),
    ({"model": A, "models": json.dumps([A, B])}, "give the field 'model' alone"),
])
def test_plans_that_cannot_run_are_refused_by_the_api(service, sample, fields, error):
    with open(sample, "rb") as f:
        response = requests.post(f"{service.url}/v1/tasks", headers=AUTH, files={"audio": ("a.wav", f)},
                                 data=fields, timeout=60)
    assert response.status_code == 400 and error in response.json()["error"], response.text


def test_a_task_message_naming_a_preset_this_processor_cannot_run_fails_clearly(service, kafka, sample):
    task = service.stack.task(service.stack.spool_copy(sample), hook_url=service.receiver.url,
                              ensemble={"preset": "vocal_balanced"})
    kafka.send(service.stack.tasks, task)
    hook = wait_until(lambda: next((json.loads(d["body"]) for d in service.receiver.successes()
                                    if json.loads(d["body"])["task_uuid"] == task["task_uuid"]), None),
                      120, "the failure's webhook", interval=0.1)
    assert hook["status"] == "failed"
    assert "ensemble preset 'vocal_balanced' needs" in hook["error_message"], hook


# Four separations of a 2-minute input by two processors (each model's takes about 5 s on an idle
# core); the waits below end the test, they do not time it.
@pytest.mark.timeout(900)
def test_a_sigterm_in_the_middle_of_a_multi_model_task_ends_in_one_result(stack, kafka, pair_dir, tmp_path):
    d, _ = pair_dir
    config = stack.write_config("pair.toml", model=A, extra_models=[B], model_dir=str(d), drain_timeout=1,
                                progress_interval=0.2)
    first = stack.start(config=config)
    first.wait_ready(300)
    # Long enough that model B is still at work when the drain window (1 s) ends after its status is seen.
    task = stack.task(stack.spool_copy(tinymodel.write_sample(tmp_path / "long.wav", seconds=120)),
                      models=[A, B])
    kafka.send(stack.tasks, task)

    def second_model_running():
        return any(json.loads(r.value).get("step", "").startswith(f"separating with {B}")
                   for r in kafka.read_all(stack.status) if r.value is not None)
    wait_until(second_model_running, 400, "the task's second model to run", interval=0.2)
    first.signal(signal.SIGTERM)
    assert first.wait_exit(60) == 0
    assert kafka.results(stack.results) == [], "abandoned at the end of the drain window, not finished"

    second = stack.start(config=config)
    second.wait_ready(300)
    wait_until(lambda: kafka.committed(stack.group, stack.tasks).get(0) == 1, 600, "the redelivered task's commit")
    [result] = [r for r in kafka.results(stack.results) if r["task_uuid"] == task["task_uuid"]]
    assert result["success"], result
    assert sorted(result["stems"]) == ["UVRD-Tiny-A.instrumental", "UVRD-Tiny-A.vocals",
                                       "UVRD-Tiny-B.instrumental", "UVRD-Tiny-B.vocals"]
