"""An MDX-style ONNX model of UVR's dimensions, with generated weights.

UVR's MDX-Net models (e.g. UVR-MDX-NET-Inst_HQ_4) take a [batch, 4, 3072, 256] spectrogram
(dim_f 3072, dim_t 2**8, n_fft 6144, hop 1024) and return one of the same shape.  This one has
that interface and a convolutional U-Net body (4 down/up levels, skip connections) with random
weights, so separation time is a real model's order of magnitude; the stems are noise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from devtools import model_catalogue

NAME = "UVRD-Bench-MDX-UVRsize.onnx"
DIM_F, DIM_T_POW, N_FFT, HOP_LENGTH = 3072, 8, 6144, 1024
SEGMENT_SIZE = 2 ** DIM_T_POW
CHANNELS = (32, 48, 64, 96, 128)


def build_onnx(seed: int = 0) -> tuple[bytes, int]:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    params = 0

    def weight(name, shape):
        nonlocal params
        fan_in = int(np.prod(shape[1:]))
        w = (rng.standard_normal(shape) * np.sqrt(1.0 / fan_in)).astype(np.float32)
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, shape, w.ravel().tolist()))
        params += w.size
        return name

    def conv(x, cin, cout, name, k=3, stride=1, relu=True):
        w = weight(f"{name}_w", [cout, cin, k, k])
        b = weight(f"{name}_b", [cout])
        pad = (k - 1) // 2
        nodes.append(helper.make_node("Conv", [x, w, b], [f"{name}_c"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[pad] * 4))
        if not relu:
            return f"{name}_c"
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [name]))
        return name

    def up(x, cin, cout, name):
        w = weight(f"{name}_w", [cin, cout, 2, 2])
        nodes.append(helper.make_node("ConvTranspose", [x, w], [name], kernel_shape=[2, 2], strides=[2, 2]))
        return name

    x = conv("input", 4, CHANNELS[0], "enc0")
    skips = [x]
    for i in range(1, len(CHANNELS)):
        x = conv(x, CHANNELS[i - 1], CHANNELS[i], f"down{i}", stride=2)
        x = conv(x, CHANNELS[i], CHANNELS[i], f"enc{i}")
        skips.append(x)
    for i in range(len(CHANNELS) - 1, 0, -1):
        x = up(x, CHANNELS[i], CHANNELS[i - 1], f"up{i}")
        nodes.append(helper.make_node("Add", [x, skips[i - 1]], [f"skip{i}"]))
        x = conv(f"skip{i}", CHANNELS[i - 1], CHANNELS[i - 1], f"dec{i}")
    x = conv(x, CHANNELS[0], 4, "head", k=1, relu=False)
    nodes.append(helper.make_node("Mul", [x, "input"], ["output"]))  # a mask over the input spectrogram
    shape = ["batch", 4, DIM_F, SEGMENT_SIZE]
    graph = helper.make_graph(nodes, "uvrd_bench_mdx", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString(), params


def install(model_dir: Path) -> dict:
    """Write the model and its audio-separator catalogue entries; return its description."""
    model_dir.mkdir(parents=True, exist_ok=True)
    data, params = build_onnx()
    (model_dir / NAME).write_bytes(data)
    model_catalogue.list_model(model_dir, "mdx_download_list", f"MDX-Net Model: {Path(NAME).stem}", NAME)
    model_catalogue.describe_by_hash(model_dir, "mdx", model_dir / NAME, {
        "compensate": 1.0, "mdx_dim_f_set": DIM_F, "mdx_dim_t_set": DIM_T_POW, "mdx_n_fft_scale_set": N_FFT,
        "primary_stem": "Instrumental"})
    return {"name": NAME, "params": params, "bytes": len(data), "dim_f": DIM_F, "dim_t": SEGMENT_SIZE,
            "n_fft": N_FFT, "hop": HOP_LENGTH}
