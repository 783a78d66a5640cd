"""One task through the loaded models: its plan (one model, several, an ensemble), each model's
separation whole or in chunks, and its stems named and finished as its options say.  Runs in the
engine child (engine_child.py), on the models the model cache holds (model_cache.py)."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Protocol

from uvrd.processor import (audio_probe, bounded_decode, ensemble, ffmpeg, job_options, long_audio, progress_meter,
                            stem_encoding)
from uvrd.separation_plan import Plan


class ModelCache(Protocol):
    """What a task's separation asks of the loaded models (model_cache.ModelCache, which also
    warms each model up through :func:`separate`: named here, not imported, so that neither module
    imports the other)."""

    settings: Any
    meter: progress_meter.Meters
    chunking: long_audio.Chunking
    described: dict[str, dict]

    def get(self, model: str) -> Any: ...

    def survey(self, path: str, rate: int, declared: float | None) -> long_audio.Survey: ...

# Stem file names: audio-separator's own stem names, lower-cased.
KNOWN_STEMS = ("Vocals", "Instrumental", "Drums", "Bass", "Other", "Guitar", "Piano",
               "Lead Vocals", "Backing Vocals", "No Vocals", "Reverb", "No Reverb", "Echo", "No Echo",
               "Noise", "No Noise")


def stem_name(path: str, prefix: str = "", suffix: str = "") -> str:
    """The stem an output holds: a known stem's file is named for it; audio-separator names any
    other ``<input>_(<Stem>)_<model>``, and *prefix* (``<input>_(``) and *suffix* (``)_<model>``)
    are cut off whole, since the input's name may hold a ``_(...)_`` of its own."""
    base = Path(path).stem
    if prefix and base.startswith(prefix) and base.endswith(suffix) and len(base) > len(prefix) + len(suffix):
        base = base[len(prefix):len(base) - len(suffix)]
    return base.strip().lower().replace(" ", "_")


def output_affixes(instance, audio_path: str) -> tuple[str, str]:
    """What audio-separator puts around a stem's name in an output's file name: ``<input>_(`` and
    ``)_<model>``, as its own ``sanitize_filename`` spells them."""
    return (f"{instance.sanitize_filename(Path(audio_path).stem)}_(",
            f")_{instance.sanitize_filename(instance.model_name)}")


def separate(models: ModelCache, job) -> dict[str, str]:
    """The task's stems, as its plan says: one model's, several models' (named <model>.<stem>), or
    an ensemble's."""
    limit = models.settings.max_audio_seconds
    info = audio_probe.probe(job.audio_path)
    audio_probe.check(info, limit)
    plan = job.plan or Plan((job.model,))
    if len(plan.models) == 1:
        stems = _separate_with(models, job, info)
        if any(Path(path).suffix.lower() != f".{job.output_format}" for path in stems.values()):
            # Left as WAV for the store stage to encode (stem_encoding.py): finished as WAV files.
            return finished(stems, dataclasses.replace(job, output_format="wav"))
        return finished(stems, job)
    per_model, architectures = [], set()
    for index, model in enumerate(plan.models):
        models.meter.model(index, f"separating with {model} ({index + 1} of {len(plan.models)} models)")
        directory = os.path.join(job.workdir, f".model-{index + 1}")
        os.makedirs(directory)
        # An ensemble's inputs stay lossless whatever the task's format: they are combined first.
        one = dataclasses.replace(job, model=model, workdir=directory, plan=None,
                                  output_format="wav" if plan.ensemble else job.output_format)
        per_model.append(_separate_with(models, one, info, several=True))
        architectures.add(models.described[model]["architecture"])
    job.options.check_architectures(architectures)
    if plan.ensemble is not None:
        models.meter.step(f"combining {len(plan.models)} models' stems ({plan.ensemble.algorithm})")
        instance = models.get(plan.models[-1]).model_instance
        stitcher = ensemble.combine(per_model, plan.ensemble, job.workdir, instance.sample_rate, models.chunking)
        stems = stitcher.finish(job.workdir, job.output_format, long_audio.output_bit_depth(job.audio_path),
                                job.options.get("normalization_threshold", instance.normalization_threshold),
                                job.options.get("amplification_threshold", instance.amplification_threshold))
        return finished(stems, job)
    stems = {}
    for model, own in zip(plan.models, per_model):
        for stem, path in finished(own, dataclasses.replace(job, model=model)).items():
            key = plan.stem_key(model, stem)
            stems[key] = os.path.join(job.workdir, key + Path(path).suffix)
            os.replace(path, stems[key])
    return stems


def finished(stems: dict[str, str], job) -> dict[str, str]:
    """The stems as the task's options want them (renamed, one kept, converted); no stem at all is a
    failure unless the task asked for one stem only."""
    if not stems and job.options.get("single_stem") is None:
        raise RuntimeError("audio-separator produced no stems")
    return job_options.finish(stems, job.options, job.output_format)


def _separate_with(models: ModelCache, job, info: audio_probe.AudioInfo, several: bool = False) -> dict[str, str]:
    """*job.model*'s stems of the input, whole or in chunks; *several*: one of the task's models, so
    an option for another architecture is left to the models it fits."""
    limit = models.settings.max_audio_seconds
    separator = own_copy(models.get(job.model))
    instance = separator.model_instance
    instance.output_format = job.output_format.upper()
    with bounded_decode.limited(limit, job.audio_path, info, job.decoded), \
            job_options.applied(instance, job.options, several):
        surveyed = None
        if models.chunking.needed(info.seconds):
            surveyed = models.survey(job.audio_path, instance.sample_rate, info.seconds)
        if surveyed is not None and models.chunking.needed(surveyed.seconds):
            return _separate_in_chunks(models, separator, job, surveyed)
        return _separate_whole(separator, job, info, limit, several)


def own_copy(separator):
    """A job's own Separator over a loaded model: what a job sets on it (its options, its output
    directory and format, the per-file state audio-separator keeps on the model's object) is its
    copy's, and the weights are shared.  Two jobs may be in the engine child at once (device_gate.py)."""
    mine = copy.copy(separator)
    mine.model_instance = copy.copy(separator.model_instance)
    return mine


def _separate_whole(separator, job, info: audio_probe.AudioInfo, limit: float, several: bool = False) -> dict[str, str]:
    # The models are stereo and audio-separator only widens mono: more channels are folded
    # down by ffmpeg, which knows the surround layouts' downmix matrices.
    audio_path = _downmix(job, info.channels, limit) if info.channels > 2 else job.audio_path
    later = not several and stem_encoding.deferrable(job, long_audio.output_bit_depth(job.audio_path))
    try:
        if later and not separator.model_instance.use_soundfile:
            with stem_encoding.written_as_wav(separator.model_instance):
                return _run_model(separator, audio_path, job.workdir)
        return _run_model(separator, audio_path, job.workdir)
    finally:
        if audio_path != job.audio_path:
            os.unlink(audio_path)


def _separate_in_chunks(models: ModelCache, separator, job, surveyed: long_audio.Survey) -> dict[str, str]:
    """A long input through long_audio: each chunk separated as a file of its own by the loaded
    model, with the whole-file normalisations turned off for the chunks and applied once instead."""
    instance = separator.model_instance
    plan, rate = models.chunking, surveyed.rate
    normalization, amplification = instance.normalization_threshold, instance.amplification_threshold
    architecture = job_options.architecture(instance)
    gain = (long_audio.input_gain(surveyed.peak, normalization, amplification)
            if architecture in job_options.NORMALISES_INPUT else 1.0)
    directory = os.path.join(job.workdir, ".chunks")
    os.makedirs(directory, exist_ok=True)
    stitcher = long_audio.Stitcher(job.workdir, rate, plan.frames(rate)[1])
    count = plan.count(surveyed.frames, rate)
    saved = {name: getattr(instance, name) for name in _CHUNK_SETTINGS}
    try:
        # Float WAV in and out, unnormalised: the stitcher holds what the model gave, over full scale too.
        instance.normalization_threshold, instance.amplification_threshold = math.inf, None
        instance.use_soundfile, instance.output_format = True, "WAV"
        with long_audio.peak_of_whole(instance, architecture, surveyed.peak):
            for chunk in long_audio.chunks(job.audio_path, rate, plan, directory, gain):
                models.meter.part(chunk.index, count, f"separating with {job.model}, part {chunk.index + 1} of {count}")
                stitcher.add(chunk, _run_model(separator, chunk.path, directory))
    finally:
        stitcher.close()
        for name, value in saved.items():
            setattr(instance, name, value)
    os.unlink(os.path.join(directory, "chunk.wav"))
    os.rmdir(directory)
    return stitcher.finish(job.workdir, job.output_format, long_audio.output_bit_depth(job.audio_path),
                           normalization, amplification)


# What a chunk's separation changes on the loaded model, put back after.
_CHUNK_SETTINGS = ("normalization_threshold", "amplification_threshold", "use_soundfile", "output_format", "output_dir")


def _run_model(separator, audio_path: str, output_dir: str) -> dict[str, str]:
    """The stems the loaded model writes for *audio_path* into *output_dir*, by stem name."""
    instance = separator.model_instance
    instance.output_dir = separator.output_dir = output_dir
    outputs = separator.separate(audio_path, custom_output_names={s: s.lower().replace(" ", "_") for s in KNOWN_STEMS})
    stems = {}
    named = output_affixes(instance, audio_path)
    for out in outputs:
        path = Path(out) if os.path.isabs(out) else Path(output_dir) / out
        if not path.is_file() or path.stat().st_size == 0:
            raise RuntimeError(f"audio-separator reported {path.name} but wrote no data")
        name = stem_name(str(path), *named)
        if name in stems:
            raise RuntimeError(f"audio-separator wrote two files for the stem {name!r}")
        stems[name] = str(path)
    return stems


def _downmix(job, channels: int, max_seconds: float) -> str:
    """A stereo FLAC of the input in the work directory, no longer than any decode may be: the
    bounded decode of it then finds out whether the input ran past the limit."""
    target = os.path.join(job.workdir, ".input-stereo.flac")
    why = ffmpeg.write(["-i", job.audio_path, "-map", "0:a:0", "-t", f"{bounded_decode.bound(max_seconds):.6f}",
                        "-ac", "2", "-c:a", "flac"], target)
    if why is not None:
        raise audio_probe.Unusable(f"audio has {channels} channels and could not be mixed down to stereo: {why}")
    return target


