"""Where a loaded model really runs, and the one line that refuses a start on the CPU when a GPU was
expected: against stand-ins shaped as audio-separator's separators are."""

from __future__ import annotations

from types import SimpleNamespace

from uvrd.processor.device_check import execution_provider, expected, refusal


class Session:
    def __init__(self, providers):
        self.providers = providers

    def get_providers(self):
        return self.providers


def onnx_model(active: list[str], asked: list[str]):
    session = Session(active)
    instance = SimpleNamespace(uses_pytorch_inference=False, model_run=lambda spek: session.get_providers())
    return SimpleNamespace(model_instance=instance, onnx_execution_provider=asked, torch_device=None)


def test_an_onnx_model_reports_the_provider_its_session_really_uses_not_the_one_asked_for():
    # CUDA asked for, the CUDA libraries missing: ONNX Runtime fell back to the CPU.
    assert execution_provider(onnx_model(["CPUExecutionProvider"], ["CUDAExecutionProvider"])) == "CPUExecutionProvider"
    assert execution_provider(onnx_model(["CUDAExecutionProvider", "CPUExecutionProvider"],
                                         ["CUDAExecutionProvider"])) == "CUDAExecutionProvider"


def test_a_torch_model_reports_its_device():
    instance = SimpleNamespace(uses_pytorch_inference=True, torch_device=SimpleNamespace(type="cuda"))
    assert execution_provider(SimpleNamespace(model_instance=instance, onnx_execution_provider=None)) == "torch:cuda"


def test_a_per_gpu_unit_expects_its_gpu_unless_the_config_says_otherwise():
    assert expected("", "uvrd-processor@0.service") == "cuda"
    assert expected("", "uvrd-processor.service") == "auto" and expected("", None) == "auto"
    assert expected("auto", "uvrd-processor@0.service") == "auto"
    assert expected("cuda", None) == "cuda"


def test_only_an_expected_gpu_that_is_not_there_refuses_the_start():
    line = refusal("cuda", "m.onnx", "CPUExecutionProvider", "0")
    assert line.startswith('processor.device is "cuda" but m.onnx runs on CPUExecutionProvider (CUDA_VISIBLE_DEVICES=')
    assert "\n" not in line and "onnxruntime-gpu" in line
    assert refusal("cuda", "m.onnx", "CUDAExecutionProvider", "0") is None
    assert refusal("cuda", "m.ckpt", "torch:cuda", None) is None
    assert refusal("auto", "m.onnx", "CPUExecutionProvider", None) is None
