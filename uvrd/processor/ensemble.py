"""An ensemble's stems: every model's stems grouped by name the way audio-separator's own ensemble
groups them (``Separator._separate_ensemble``), combined by its ``Ensembler``, a block at a time.

The library loads each model's whole stems and combines them at once; here they are read in blocks
of ``chunk_seconds`` plus the overlap and stitched like a long input's chunks (long_audio.Stitcher),
so an ensemble of a long input takes the memory of one block.  An input no longer than one block is
combined in one piece, as the library does.
"""

from __future__ import annotations

import logging

import numpy as np

from uvrd.processor import long_audio
from uvrd.separation_plan import Ensemble

# audio-separator's STEM_NAME_MAP, for uvrd's stem names (lower case, "_" for a space), where it
# renames.  "no_vocals" is mapped to instrumental as the map says; the library's own first rule
# ("vocal" in the name: vocals) catches it before the map, and would mix it into the vocals.
_RENAMED = {"inst": "instrumental", "karaoke": "instrumental", "no_vocals": "instrumental"}


def stem_groups(per_model: list[dict[str, str]]) -> dict[str, list[str]]:
    """Stem name -> the files of it, one per model that made it, in the models' order."""
    groups: dict[str, list[str]] = {}
    for stems in per_model:
        has_vocals = any("vocal" in name for name in stems)
        for name, path in stems.items():
            if "vocal" in name and not name.startswith(("lead", "backing", "no_")):
                key = "vocals"
            elif name == "other" and len(stems) == 2 and has_vocals:
                key = "instrumental"  # the library's reading of a vocal model's "other"
            else:
                key = _RENAMED.get(name, name)
            groups.setdefault(key, []).append(path)
    return groups


def combine(per_model: list[dict[str, str]], ensemble: Ensemble, directory: str, rate: int,
            blocks: long_audio.Chunking) -> long_audio.Stitcher:
    """The combined stems, stitched in *directory* (the caller finishes them into the output format)."""
    import soundfile
    from audio_separator.separator.ensembler import Ensembler

    ensembler = Ensembler(logging.getLogger("uvrd.ensemble"), ensemble.algorithm,
                          list(ensemble.weights) if ensemble.weights else None)
    groups = stem_groups(per_model)
    readers = {name: [soundfile.SoundFile(path) for path in paths] for name, paths in groups.items()}
    hop, overlap = blocks.frames(rate)
    stitcher = long_audio.Stitcher(directory, rate, overlap)
    try:
        frames = max(f.frames for files in readers.values() for f in files)
        start, index = 0, 0
        while True:
            size = min(hop + overlap, frames - start)
            last = start + hop + overlap >= frames
            block = long_audio.Chunk(index, "", size, last)
            stitcher.add_audio(block, {name: ensembler.ensemble([_read(f, start, size).T for f in files]).T
                                       for name, files in readers.items()})
            if last:
                return stitcher
            start, index = start + hop, index + 1
    finally:
        for files in readers.values():
            for f in files:
                f.close()


def _read(f, start: int, frames: int) -> np.ndarray:
    """*frames* of an open stem file from *start*, stereo float32, zero-padded past its end (the
    library pads shorter stems the same way)."""
    f.seek(min(start, f.frames))
    audio = f.read(frames, dtype="float32", always_2d=True)
    if audio.shape[1] == 1:
        audio = np.repeat(audio, long_audio.CHANNELS, axis=1)
    if len(audio) < frames:
        audio = np.concatenate([audio, np.zeros((frames - len(audio), audio.shape[1]), dtype=np.float32)])
    return audio
