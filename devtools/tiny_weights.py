"""What the tiny generated checkpoints share: seeded random weights and the files they are written to.

Each tiny model is a real network of its architecture, shrunk, with random weights from a fixed
seed, so that a build gives the same bytes every time and the real loading and separation code of
audio-separator runs on it.  What it separates is not musically meaningful.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

SEED = 14


@contextlib.contextmanager
def seeded(seed: int = SEED):
    """Torch's random state fixed for a build, and the caller's own left as it was."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def torch_bytes(obj) -> bytes:
    """What ``torch.save`` writes for *obj*: the zip format every current checkpoint uses."""
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def write_file(path: Path, data: bytes | str) -> Path:
    """Write whole or not at all: a reader never finds half a checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    tmp.replace(path)
    return path


def yaml_text(config: dict) -> str:
    """YAML as the published configs are written: tuples stay ``!!python/tuple``, which
    audio-separator's ``yaml.FullLoader`` reads back as tuples."""
    import yaml

    class Dumper(yaml.Dumper):
        def ignore_aliases(self, data):  # a value used twice is written twice, not as an anchor
            return True

    return yaml.dump(config, Dumper=Dumper, sort_keys=False)
