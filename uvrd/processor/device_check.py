"""Where a loaded model really runs, and whether that is where the deployment expects it.

audio-separator picks CUDA when torch sees a GPU, and asks ONNX Runtime for its CUDA provider; when
the CUDA libraries are missing, ONNX Runtime falls back to the CPU with a warning nobody reads (the
most reported trouble in audio-separator's tracker).  So the engine asks the loaded model itself:
the ONNX session's active provider, or torch's device.  ``processor.device`` says what to expect:
"cuda" (a per-GPU unit sets it) refuses a model that runs on the CPU, "cpu" hides every GPU, "auto"
takes what there is (mixed fleets).
"""

from __future__ import annotations

DEVICES = ("auto", "cuda", "cpu")
PER_GPU_UNIT = "uvrd-processor@"
# Execution providers that are a GPU.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider")


def expected(configured: str, unit: str | None) -> str:
    """processor.device as set, else what the unit implies: a per-GPU unit is there for its GPU."""
    if configured:
        return configured
    return "cuda" if unit and unit.startswith(PER_GPU_UNIT) else "auto"


def execution_provider(separator) -> str:
    """``CUDAExecutionProvider``/``CPUExecutionProvider`` for a model ONNX Runtime runs (the session's
    active provider, not the one asked for), ``torch:cuda``/``torch:cpu`` for one torch runs."""
    instance = separator.model_instance
    if getattr(instance, "uses_pytorch_inference", True) is False:
        session = _session(getattr(instance, "model_run", None))
        if session is not None:
            return session.get_providers()[0]
        return (separator.onnx_execution_provider or ["CPUExecutionProvider"])[0]
    device = getattr(instance, "torch_device", None) or separator.torch_device
    return f"torch:{getattr(device, 'type', device)}"


def on_gpu(provider: str) -> bool:
    return provider in GPU_PROVIDERS or provider in ("torch:cuda", "torch:mps", "torch:privateuseone")


def refusal(expected: str, model: str, provider: str, visible: str | None) -> str | None:
    """The one line that refuses the start, or None when the model runs where expected."""
    if expected != "cuda" or on_gpu(provider):
        return None
    seen = f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES unset"
    return (f"processor.device is \"cuda\" but {model} runs on {provider} ({seen}): torch sees no usable GPU or "
            f"ONNX Runtime has no CUDA provider (install onnxruntime-gpu and the CUDA libraries), or set "
            f"processor.device = \"auto\" to accept the CPU")


def _session(model_run):
    """The ONNX Runtime session audio-separator's MDX loader keeps inside its run function."""
    for cell in getattr(model_run, "__closure__", None) or ():
        contents = cell.cell_contents
        if hasattr(contents, "get_providers"):
            return contents
    return None
