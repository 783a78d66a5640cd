"""Tiny generated models of the architectures no real weights are reachable for, offline.

audio-separator serves four architectures.  MDX and VR have real weights uvrd can fetch
(``tinymodel`` covers MDX offline); MDXC (BS-Roformer, Mel-Band Roformer, MDX23C) and Demucs v4
have none reachable, so these are generated: real networks of each architecture, shrunk, with
seeded random weights, written in the published file formats and listed in the model directory's
``download_checks.json``, so that ``Separator.load_model(filename)`` and ``separate`` run their
real code with no network.  Each installer returns the ``InstalledModel`` (its ``filename`` is
what ``processor.model`` names) and takes well under a second or two.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable

from devtools.model_catalogue import InstalledModel
from devtools.tiny_demucs import install_htdemucs, install_htdemucs_6s
from devtools.tiny_mdxc import install_bs_roformer, install_mdx23c, install_mel_band_roformer

INSTALLERS: dict[str, Callable[[Path], InstalledModel]] = {
    "bs_roformer": install_bs_roformer,
    "mel_band_roformer": install_mel_band_roformer,
    "mdx23c": install_mdx23c,
    "htdemucs": install_htdemucs,
    "htdemucs_6s": install_htdemucs_6s,
}


def install_all(model_dir: Path) -> dict[str, InstalledModel]:
    """Every tiny model into one model directory, as a deployment keeps several models side by side."""
    return {name: install(model_dir) for name, install in INSTALLERS.items()}
