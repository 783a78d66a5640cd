"""A task's separation options applied in the engine child: set on the loaded model for one job and
put back afterwards, then the stems chosen, renamed and converted as the task asked.

The model stays loaded between tasks, so every attribute a job sets is restored when it ends,
whatever way it ends: the next task gets the deployment's settings.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from uvrd.processor import ffmpeg
from uvrd.separation_options import OptionError, SeparationOptions

# audio-separator's class for each architecture.
ARCHITECTURES = {"MDXSeparator": "MDX", "VRSeparator": "VR", "DemucsSeparator": "Demucs", "MDXCSeparator": "MDXC"}
# Those whose separate() normalises the whole input before the model sees it (spec_utils.normalize).
NORMALISES_INPUT = ("MDX", "MDXC")
# Each output format's PCM codec for each bit depth (flac's is a sample format: the codec is flac).
_PCM = {"wav": {16: "pcm_s16le", 24: "pcm_s24le", 32: "pcm_s32le"},
        "aiff": {16: "pcm_s16be", 24: "pcm_s24be", 32: "pcm_s32be"}}
_FLAC = {16: ["-sample_fmt", "s16"], 24: ["-sample_fmt", "s32", "-bits_per_raw_sample", "24"]}


def architecture(instance) -> str:
    return ARCHITECTURES.get(type(instance).__name__, type(instance).__name__)


@contextlib.contextmanager
def applied(instance, options: SeparationOptions, several: bool = False):
    """*options* set on the loaded model *instance* for the duration; OptionError for one that does
    not fit its architecture, unless the model is one of *several* (options fit some of them)."""
    attributes = options.for_architecture(architecture(instance), several)
    single = options.get("single_stem")
    if single is not None:
        attributes["output_single_stem"] = single.replace("_", " ")
    saved = {name: getattr(instance, name) for name in attributes if hasattr(instance, name)}
    missing = [name for name in attributes if not hasattr(instance, name)]
    if missing:
        raise OptionError(f"this version of audio-separator has no setting {missing[0]} for "
                          f"{architecture(instance)} models")
    aggressiveness = getattr(instance, "aggressiveness", None)
    try:
        for name, value in attributes.items():
            setattr(instance, name, value)
        if "aggression" in attributes and isinstance(aggressiveness, dict):
            # VR reads the aggression through this dict, built when the model loaded.
            instance.aggression = attributes["aggression"] / 100
            instance.aggressiveness = {**aggressiveness, "value": instance.aggression}
        yield
    finally:
        for name, value in saved.items():
            setattr(instance, name, value)
        if aggressiveness is not None:
            instance.aggressiveness = aggressiveness


def finish(stems: dict[str, str], options: SeparationOptions, output_format: str) -> dict[str, str]:
    """The stems as the task asked for them: only the single stem, under the custom names, at the
    sample rate and bit depth it set."""
    single = options.get("single_stem")
    if single is not None:
        if single not in stems:
            raise OptionError(f"option single_stem: the model has no stem {single!r} (it has "
                              f"{', '.join(sorted(stems)) or 'none'})")
        stems = {single: stems[single]}
    names = dict(options.get("stem_names") or ())
    unknown = sorted(set(names) - set(stems))
    if unknown:
        raise OptionError(f"option stem_names: the model has no stem {unknown[0]!r} (it has "
                          f"{', '.join(sorted(stems))})")
    out = _renamed(stems, options.final_names(stems))
    if options.get("sample_rate") is not None or options.get("bit_depth") is not None:
        for path in out.values():
            _convert(path, output_format, options.get("sample_rate"), options.get("bit_depth"))
    return out


def _renamed(stems: dict[str, str], names: dict[str, str]) -> dict[str, str]:
    """The stems' files moved to their final *names* (distinct, final_names saw to it), by name.
    Each moving file goes to a temporary name first: moved one after another, a swap's first
    stem would overwrite the second before the second had moved."""
    targets = {stem: str(Path(path).with_name(names[stem] + Path(path).suffix)) for stem, path in stems.items()}
    moving = [stem for stem, path in stems.items() if targets[stem] != path]
    # A leading '.' is in no stem name (STEM_NAME_RE): no target can be one of these.
    staged = {stem: str(Path(stems[stem]).with_name(f".renaming-{index}")) for index, stem in enumerate(moving)}
    for stem in moving:
        os.replace(stems[stem], staged[stem])
    for stem in moving:
        os.replace(staged[stem], targets[stem])
    return {names[stem]: targets[stem] for stem in stems}


def depth_args(output_format: str, bit_depth: int) -> list[str]:
    """ffmpeg's arguments for PCM of *bit_depth* in *output_format* (FLAC holds 24 bits at most);
    none for a lossy format."""
    if output_format in _PCM:
        return ["-c:a", _PCM[output_format][bit_depth]]
    if output_format == "flac":
        return _FLAC[min(bit_depth, 24)]
    return []


def _convert(path: str, output_format: str, sample_rate: int | None, bit_depth: int | None) -> None:
    """Rewrite *path* in place with ffmpeg at the asked sample rate and bit depth."""
    args = ["-i", path]
    if sample_rate is not None:
        args += ["-ar", str(sample_rate)]
    if bit_depth is not None:
        args += depth_args(output_format, bit_depth)
    temporary = f"{path}.converting{Path(path).suffix}"
    why = ffmpeg.write(args, temporary)
    if why is not None:
        raise RuntimeError(f"could not convert a stem to the asked sample rate / bit depth: {why}")
    os.replace(temporary, path)
