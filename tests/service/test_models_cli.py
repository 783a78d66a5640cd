"""``uvrd models list`` and ``uvrd models pull`` as an operator runs them: audio-separator's catalogue
read offline, with what this configuration serves and holds; a pull that cannot reach the model
hosts says so in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from devtools import tinymodel


def uvrd(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "uvrd", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def config(tmp_path) -> str:
    models = tmp_path / "models"
    tinymodel.install(models)
    path = tmp_path / "uvrd.toml"
    path.write_text(f'[processor]\nmodel = "{tinymodel.TINY_MODEL}"\nextra_models = ["UVR-MDX-NET-Inst_HQ_5.onnx"]\n'
                    f'model_dir = "{models}"\n')
    return str(path)


def test_list_shows_the_catalogue_with_the_served_and_present_models(tmp_path):
    run = uvrd("models", "list", "--json", "--config", config(tmp_path))
    assert run.returncode == 0, run.stderr
    rows = {r["model"]: r for r in json.loads(run.stdout)["models"]}
    assert len(rows) > 100
    hq5 = rows["UVR-MDX-NET-Inst_HQ_5.onnx"]
    assert (hq5["architecture"], hq5["served"], hq5["present"]) == ("MDX", True, False)
    tiny = rows[tinymodel.TINY_MODEL]
    assert (tiny["served"], tiny["present"]) == (True, True)
    assert {r["architecture"] for r in rows.values()} >= {"MDX", "VR", "Demucs", "MDXC"}
    only_vr = uvrd("models", "list", "--architecture", "VR", "--config", config(tmp_path / "again"))
    assert only_vr.returncode == 0 and "UVR-DeNoise.pth" in only_vr.stdout and ".onnx" not in only_vr.stdout


def test_pull_of_an_unknown_model_or_from_an_offline_host_is_one_clear_line_and_status_2(tmp_path):
    cfg = config(tmp_path)
    unknown = uvrd("models", "pull", "no-such-model.onnx", "--config", cfg)
    assert unknown.returncode == 2 and "unknown model 'no-such-model.onnx'" in unknown.stderr
    # Every request goes to a proxy that refuses: what a host without a way out meets.
    offline = uvrd("models", "pull", "UVR-MDX-NET-Inst_HQ_5.onnx", "--config", cfg,
                   env={"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""})
    assert offline.returncode == 2
    said = [line for line in offline.stderr.splitlines() if line.startswith("uvrd models pull:")]
    assert len(said) == 1 and "UVR-MDX-NET-Inst_HQ_5.onnx was not fetched" in said[0]
    assert "is this host online?" in said[0]
    assert not (tmp_path / "models" / "UVR-MDX-NET-Inst_HQ_5.onnx").exists()
