"""Tiny Demucs v4 (HTDemucs) models with 4 and 6 sources, in the format Meta publishes them.

audio-separator names a Demucs v4 model by a YAML, the "bag": ``models: [<signature>]``.  Both
the bag and the checkpoint are found by scanning the model directory (``uvr_lib_v5/demucs/repo.py``):
any ``*.yaml`` is a bag named by its stem, any ``*.th`` a model named by the part of its name
before ``-``, and the part after it must be the start of the file's sha256.  A ``.th`` is a
pickled dict, ``{"klass", "args", "kwargs", "state", "training_args"}``, read with
``torch.load(weights_only=False)``: the network is rebuilt as ``klass(*args, **kwargs)`` and
given ``state`` (half precision, as ``demucs`` saves it).  ``klass`` is pickled by name as
``demucs.htdemucs.HTDemucs``, the name Meta's files carry; audio-separator makes its own copy of
demucs importable under that name (``DemucsSeparator`` puts ``uvr_lib_v5`` on ``sys.path``).

audio-separator reads the checkpoint in every ``separate`` call, not in ``load_model``: a model
that loads can still fail at its first separation.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
from pathlib import Path

from devtools import model_catalogue
from devtools.tiny_weights import SEED, seeded, torch_bytes, write_file, yaml_text

HTDEMUCS = "uvrd_tiny_htdemucs.yaml"
HTDEMUCS_6S = "uvrd_tiny_htdemucs_6s.yaml"

# The order of htdemucs and htdemucs_6s: audio-separator maps a source to its stem by position.
SOURCES_4 = ("drums", "bass", "other", "vocals")
SOURCES_6 = (*SOURCES_4, "guitar", "piano")

# htdemucs's structure (hybrid time and frequency branches, 4 layers, a 4096-point STFT, a transformer
# between the branches), with 4 channels instead of 48 and 1 transformer layer instead of 5.  Its
# training segment is 2 s instead of 7.8 s: a separation goes through apply_model's overlapping
# windows already for a clip of a few seconds, and each window costs less.
HTDEMUCS_KWARGS = {"audio_channels": 2, "samplerate": 44100, "segment": 2, "channels": 4, "dconv_comp": 4,
                   "depth": 4, "nfft": 4096, "t_layers": 1, "t_heads": 8, "bottom_channels": 0}


@contextlib.contextmanager
def _demucs_as_published():
    """audio-separator's copy of demucs imported as the package ``demucs``, so that a pickled class
    is named as in Meta's checkpoints; this process's modules are left as they were."""
    import audio_separator.separator.uvr_lib_v5 as uvr_lib_v5

    root = os.path.dirname(uvr_lib_v5.__file__)
    before = set(sys.modules)
    sys.path.insert(0, root)
    try:
        yield importlib.import_module("demucs.htdemucs"), importlib.import_module("demucs.states")
    finally:
        sys.path.remove(root)
        for name in set(sys.modules) - before:
            if name == "demucs" or name.startswith("demucs."):
                del sys.modules[name]


def checkpoint_bytes(sources: tuple[str, ...]) -> bytes:
    """A ``.th`` as ``demucs.states.serialize_model`` writes it, of a tiny random HTDemucs."""
    with _demucs_as_published() as (htdemucs, states), seeded():
        model = htdemucs.HTDemucs(sources=list(sources), **HTDEMUCS_KWARGS)
        args, kwargs = model._init_args_kwargs
        return torch_bytes({"klass": htdemucs.HTDemucs, "args": args, "kwargs": kwargs,
                            "state": states.get_state(model, None, half=True),
                            "training_args": {"model": "htdemucs", "seed": SEED}})


def _install(model_dir: Path, bag: str, sources: tuple[str, ...]) -> model_catalogue.InstalledModel:
    name = Path(bag).stem
    signature = hashlib.sha256(name.encode()).hexdigest()[:8]  # 8 hex digits, as Meta's; fixed per model
    data = checkpoint_bytes(sources)
    checkpoint = f"{signature}-{hashlib.sha256(data).hexdigest()[:8]}.th"
    model_dir.mkdir(parents=True, exist_ok=True)
    # The repo refuses two files of one signature: drop what an older build left.
    for stale in model_dir.glob(f"{signature}*.th"):
        if stale.name != checkpoint:
            stale.unlink()
    write_file(model_dir / checkpoint, data)
    write_file(model_dir / bag, yaml_text({"models": [signature]}))
    model_catalogue.list_model(model_dir, "demucs_download_list", f"Demucs v4: {name}",
                               {checkpoint: checkpoint, bag: bag})
    return model_catalogue.InstalledModel(bag, "Demucs", sources)


def install_htdemucs(model_dir: Path) -> model_catalogue.InstalledModel:
    """A 4-source HTDemucs: drums, bass, other, vocals."""
    return _install(model_dir, HTDEMUCS, SOURCES_4)


def install_htdemucs_6s(model_dir: Path) -> model_catalogue.InstalledModel:
    """A 6-source HTDemucs: drums, bass, other, vocals, guitar, piano."""
    return _install(model_dir, HTDEMUCS_6S, SOURCES_6)
