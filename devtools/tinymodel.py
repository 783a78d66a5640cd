"""A tiny MDX-style ONNX model that audio-separator loads and runs offline.

audio-separator identifies an MDX model by the MD5 of its file and looks its
parameters up in ``mdx_model_data.json``; it finds the file itself through
``download_checks.json``.  Both live in the model directory, so writing them
there lets the real ``Separator.load_model`` and ``separate`` run with no
network.  The graph scales the spectrogram by a constant: the "vocals" it
yields are not musically meaningful, but every step of the real path (STFT,
ONNX inference, inverse STFT, encoding the stems) runs.
"""

from __future__ import annotations

from pathlib import Path


from devtools import model_catalogue
from uvrd.processor.chord_sample import write_sample  # noqa: F401  (tests and tools take it from here)

TINY_MODEL = "UVRD-Tiny-MDX.onnx"
DIM_F = 256
DIM_T_POW = 5  # dim_t = 2**5 = 32 frames per segment
N_FFT = 512
HOP_LENGTH = 256  # must not exceed N_FFT
SEGMENT_SIZE = 2 ** DIM_T_POW

def build_onnx(gain: float = 0.5) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    shape = ["batch", 4, DIM_F, SEGMENT_SIZE]
    graph = helper.make_graph(
        [helper.make_node("Mul", ["input", "gain"], ["output"])],
        "uvrd_tiny_mdx",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)],
        initializer=[helper.make_tensor("gain", TensorProto.FLOAT, [], [gain])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def install(model_dir: Path, name: str = TINY_MODEL, primary_stem: str = "Vocals",
            gain: float = 0.5) -> model_catalogue.InstalledModel:
    """Write the model and its catalogue entries into *model_dir*; models of another *gain* give
    other stems (an ensemble of two of them is not one model's output)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / name
    path.write_bytes(build_onnx(gain))
    model_catalogue.list_model(model_dir, "mdx_download_list", f"MDX-Net Model: {Path(name).stem}", name)
    model_catalogue.describe_by_hash(model_dir, "mdx", path, {
        "compensate": 1.0, "mdx_dim_f_set": DIM_F, "mdx_dim_t_set": DIM_T_POW,
        "mdx_n_fft_scale_set": N_FFT, "primary_stem": primary_stem})
    # audio-separator's pairing (CommonSeparator.secondary_stem): Vocals and Instrumental, else X and No X.
    secondary = {"Vocals": "Instrumental", "Instrumental": "Vocals"}.get(primary_stem) or (
        primary_stem.removeprefix("No ") if primary_stem.startswith("No ") else f"No {primary_stem}")
    return model_catalogue.InstalledModel(
        name, "MDX", tuple(stem.lower().replace(" ", "_") for stem in (primary_stem, secondary)),
        (("mdx_hop_length", HOP_LENGTH), ("mdx_segment_size", SEGMENT_SIZE)))
