"""Tiny MDXC-family models (BS-Roformer, Mel-Band Roformer, MDX23C) in their published format.

audio-separator serves these as "MDXC": a ``.ckpt`` that is a plain ``state_dict`` and a YAML
named beside it in ``download_checks.json`` (``{checkpoint: yaml}`` under
``roformer_download_list`` or ``mdx23c_download_list``).  The YAML carries everything the loader
needs: ``model`` (the network's constructor arguments), ``audio`` (STFT and chunking),
``training`` (``instruments``, ``target_instrument``: the stem names) and ``inference``
(``dim_t``, ``num_overlap``, ``batch_size``).  A YAML whose ``model`` has ``freqs_per_bands`` is a
BS-Roformer, one with ``num_bands`` a Mel-Band Roformer, any other is run by ``TFC_TDF_net``.

Each network is built here from its YAML's ``model`` section, the way the training code that
publishes these checkpoints builds it, and not through audio-separator's loader: a loader that
builds the network wrong then fails on the checkpoint as it would on a real one.  (0.47.1's
RoformerLoader does not pass a BS-Roformer's ``mask_estimator_depth`` on, so any value but the
constructor's default, 2, fails its main path and loads only through its legacy fallback: the
BS-Roformer here keeps 2, as ``model_bs_roformer_ep_317`` has.)  The layouts follow the published
models (the STFT, the 62 bands of ``model_bs_roformer_ep_317``, the 60 mel bands); only widths and
depths are shrunk.
"""

from __future__ import annotations

from pathlib import Path

from devtools import model_catalogue
from devtools.tiny_weights import seeded, torch_bytes, write_file, yaml_text

BS_ROFORMER = "uvrd_tiny_bs_roformer.ckpt"
MEL_BAND_ROFORMER = "uvrd_tiny_mel_band_roformer.ckpt"
MDX23C = "uvrd_tiny_mdx23c.ckpt"

# model_bs_roformer_ep_317_sdr_12.9755's band layout: 62 bands over the 1025 bins of a 2048-point STFT.
EP317_BANDS = (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)

# 44.1 kHz audio, STFT of 2048 points and a hop of 441 (10 ms), as the published Roformers use.
_ROFORMER_AUDIO = {"chunk_size": 352800, "dim_f": 1024, "dim_t": 801, "hop_length": 441, "n_fft": 2048,
                   "num_channels": 2, "sample_rate": 44100, "min_mean_abs": 0.0}
_ROFORMER_STFT = {"dim_freqs_in": 1025, "stft_n_fft": 2048, "stft_hop_length": 441, "stft_win_length": 2048,
                  "stft_normalized": False, "mask_estimator_depth": 2, "multi_stft_resolution_loss_weight": 1.0,
                  "multi_stft_resolutions_window_sizes": (4096, 2048, 1024, 512, 256), "multi_stft_hop_size": 147,
                  "multi_stft_normalized": False}
_TINY_TRANSFORMER = {"dim": 16, "depth": 1, "stereo": True, "time_transformer_depth": 1, "freq_transformer_depth": 1,
                     "dim_head": 8, "heads": 2, "attn_dropout": 0.0, "ff_dropout": 0.0, "flash_attn": True}
_INFERENCE = {"batch_size": 1, "dim_t": 801, "num_overlap": 4}

# One target and its residual, like model_bs_roformer_ep_317_sdr_12.9755 (audio-separator's default):
# the network yields Vocals, audio-separator derives Instrumental as mix - Vocals.
BS_ROFORMER_CONFIG = {
    "audio": _ROFORMER_AUDIO,
    "model": {**_TINY_TRANSFORMER, "num_stems": 1, "linear_transformer_depth": 0, "freqs_per_bands": EP317_BANDS,
              **_ROFORMER_STFT},
    "training": {"instruments": ["Vocals", "Instrumental"], "target_instrument": "Vocals"},
    "inference": _INFERENCE,
}

# Two outputs of the network itself, named as ZFTurbo's configs name them (lower case, "other").  Its mask
# estimators' hidden layer is 4 * dim whatever the YAML says, and its overlapping mel bands cover each bin
# about twice: dim 8 keeps it near 1 M parameters.
MEL_BAND_ROFORMER_CONFIG = {
    "audio": _ROFORMER_AUDIO,
    "model": {**_TINY_TRANSFORMER, "dim": 8, "num_stems": 2, "num_bands": 60, "sample_rate": 44100,
              **_ROFORMER_STFT, "mask_estimator_depth": 1},
    "training": {"instruments": ["vocals", "other"], "target_instrument": None},
    "inference": _INFERENCE,
}

# model_2_stem_full_band_8k's structure (subbands, scales, InstanceNorm, GELU) on a 2048-point STFT, with
# the lower 512 bins only (up to 11 kHz) and 2 overlapping windows instead of 8: its cost grows with both.
MDX23C_CONFIG = {
    "audio": {"chunk_size": 130560, "dim_f": 512, "dim_t": 256, "hop_length": 512, "n_fft": 2048,
              "num_channels": 2, "sample_rate": 44100, "min_mean_abs": 0.001},
    "model": {"act": "gelu", "bottleneck_factor": 4, "growth": 4, "norm": "InstanceNorm", "num_blocks_per_scale": 1,
              "num_channels": 4, "num_scales": 2, "num_subbands": 4, "scale": [2, 2]},
    "training": {"instruments": ["Vocals", "Instrumental"], "target_instrument": None},
    "inference": {"batch_size": 1, "dim_t": 256, "num_overlap": 2},
}


def _bs_roformer(config: dict):
    from audio_separator.separator.uvr_lib_v5.roformer.bs_roformer import BSRoformer

    return BSRoformer(**config["model"])


def _mel_band_roformer(config: dict):
    from audio_separator.separator.uvr_lib_v5.roformer.mel_band_roformer import MelBandRoformer

    return MelBandRoformer(**config["model"])


def _tfc_tdf(config: dict):
    import torch
    from audio_separator.separator.uvr_lib_v5.tfc_tdf_v3 import TFC_TDF_net
    from ml_collections import ConfigDict

    return TFC_TDF_net(ConfigDict(config), device=torch.device("cpu"))


def _stems(training: dict) -> tuple[str, ...]:
    """The stems audio-separator writes, in the YAML's order: a target comes first, then the rest."""
    target = training["target_instrument"]
    names = [target, *[i for i in training["instruments"] if i != target]] if target else training["instruments"]
    return tuple(n.lower() for n in names)


def _install(model_dir: Path, checkpoint: str, download_list: str, friendly_name: str, config: dict,
             network) -> model_catalogue.InstalledModel:
    config_name = Path(checkpoint).stem + ".yaml"
    write_file(model_dir / config_name, yaml_text(config))
    with seeded():
        state = network(config).state_dict()
    write_file(model_dir / checkpoint, torch_bytes(state))
    model_catalogue.list_model(model_dir, download_list, friendly_name, {checkpoint: config_name})
    return model_catalogue.InstalledModel(checkpoint, "MDXC", _stems(config["training"]))


def install_bs_roformer(model_dir: Path) -> model_catalogue.InstalledModel:
    """A 2-stem BS-Roformer (Vocals, and Instrumental as the residual)."""
    return _install(model_dir, BS_ROFORMER, "roformer_download_list", "Roformer Model: UVRD Tiny BS-Roformer",
                    BS_ROFORMER_CONFIG, _bs_roformer)


def install_mel_band_roformer(model_dir: Path) -> model_catalogue.InstalledModel:
    """A 2-stem Mel-Band Roformer (vocals, other)."""
    return _install(model_dir, MEL_BAND_ROFORMER, "roformer_download_list",
                    "Roformer Model: UVRD Tiny MelBand Roformer", MEL_BAND_ROFORMER_CONFIG, _mel_band_roformer)


def install_mdx23c(model_dir: Path) -> model_catalogue.InstalledModel:
    """A 2-stem MDX23C, TFC-TDF v3 (Vocals, Instrumental)."""
    return _install(model_dir, MDX23C, "mdx23c_download_list", "MDX23C Model: UVRD Tiny MDX23C",
                    MDX23C_CONFIG, _tfc_tdf)
