"""The engine child: load the models once, then separate one job at a time.

Runs in a process started with the ``spawn`` method; only this module imports
torch and audio-separator.
"""

from __future__ import annotations

import dataclasses
import errno
import gc
import logging
import math
import os
import re
import signal
import threading
import time
from pathlib import Path

import structlog

from uvrd.processor import (audio_probe, bounded_decode, device_check, engine_warmup, ensemble, ffmpeg, job_options,
                           long_audio, progress_meter)
from uvrd.processor.engine_protocol import (Fatal, Job, JobCancelled, JobFailed, Loaded, ModelLoaded, NoSpace,
                                            Separated, Warming)
from uvrd.runtime import parent_death
from uvrd.separation_options import OptionError
from uvrd.separation_plan import Plan

# Stem file names: audio-separator's own stem names, lower-cased.
KNOWN_STEMS = ("Vocals", "Instrumental", "Drums", "Bass", "Other", "Guitar", "Piano",
               "Lead Vocals", "Backing Vocals", "No Vocals", "Reverb", "No Reverb", "Echo", "No Echo",
               "Noise", "No Noise")
# Errors from audio-separator that mean the model named in the config cannot be used at all.
_UNKNOWN_MODEL = re.compile(r"not found in supported model files|Unsupported Model File|Model type not supported")

log = structlog.get_logger("uvrd.engine.child")


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


def main(conn, heartbeat, settings, cancel=None) -> None:
    """*cancel*: a shared number, the parent's :attr:`Job.number` of the job it wants stopped."""
    # The worker alone decides when a separation ends: terminal Ctrl+C reaches
    # the whole process group, and systemd's KillMode=mixed signals only the
    # main process until its final SIGKILL.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent_death.die_with_parent()
    # Progress bars on stderr would fill the journal with carriage returns.
    os.environ["TQDM_DISABLE"] = "1"
    from uvrd.runtime import logs

    logs.configure("uvrd-engine")
    threading.Thread(target=_beat, args=(heartbeat,), daemon=True, name="heartbeat").start()

    job_now = 0  # the number of the job being separated; 0 between jobs and in the warm-up
    meter = progress_meter.Meter(conn.send, lambda: job_now != 0 and cancel is not None and cancel.value == job_now)
    if settings.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: no GPU for this engine
    models = _Models(settings, meter,
                     lambda model: conn.send(ModelLoaded(models.described[model], tuple(models.described))))
    model = settings.models[0]
    try:
        started = time.monotonic()
        models.load(model)
        info = {"model": model, "device": models.device, "model_load_s": round(time.monotonic() - started, 2),
                "architecture": models.described[model]["architecture"],
                "execution_provider": models.described[model]["execution_provider"]}
    except Exception as e:  # the parent decides what a failed load means
        message = f"could not load model {model!r}: {type(e).__name__}: {e}"
        conn.send(Fatal(message, bool(_UNKNOWN_MODEL.search(str(e)))))
        return
    refused = device_check.refusal(settings.device, model, info["execution_provider"],
                                   os.environ.get("CUDA_VISIBLE_DEVICES"))
    if refused is not None:
        conn.send(Fatal(refused, True))  # the install's or the config's trouble: a restart would not mend it
        return
    if settings.warm_up:
        conn.send(Warming(dict(info)))
        try:
            info["warmup_s"] = round(models.warm(model).seconds, 2)
            info["stems"] = models.described[model]["stems"]
        except engine_warmup.WarmupFailed as e:
            # A model that cannot separate a clean clip cannot serve a task: the config's trouble, which
            # a restart does not mend, unless the warm-up only found the disk full.
            conn.send(Fatal(str(e), not _no_space(e)))
            return
    conn.send(Loaded({**info, "gpu_memory": _gpu_memory(), "described": models.described[model]}))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if not isinstance(job, Job):
            log.error("the engine was sent something that is not a job; ignored", got=type(job).__name__)
            continue
        logs.bind_task(task_uuid=job.task_uuid)
        started = time.monotonic()
        job_now = job.number
        meter.begin(len(job.plan.models) if job.plan else 1)
        try:
            meter.model(0, f"separating with {job.model}")
            stems = _separate(models, job)
        except progress_meter.Cancelled:
            log.info("separation cancelled", after_s=round(time.monotonic() - started, 2))
            conn.send(JobCancelled())
        except audio_probe.Unusable as e:
            log.warning("input refused", error=str(e))
            conn.send(JobFailed(str(e), "unusable_audio"))
        except OptionError as e:
            log.warning("options refused", error=str(e))
            conn.send(JobFailed(f"the task's options are refused: {e}", "options"))
        except Exception as e:
            log.warning("separation failed", error=f"{type(e).__name__}: {e}")
            conn.send((NoSpace if _no_space(e) else JobFailed)(_describe(e, job)))
        else:
            conn.send(Separated(stems, time.monotonic() - started, _audio_seconds(job.audio_path), _gpu_memory()))
        finally:
            job_now = 0
            meter.end()


def _audio_seconds(path: str) -> float | None:
    """The input's length for the metrics' seconds per audio second; None if its header does not say."""
    try:
        return audio_probe.probe(path).seconds
    except Exception:
        return None


def _gpu_memory() -> tuple[int, int] | None:
    """The device's (used, total) bytes, every process's, for the metrics: ONNX Runtime's arena is
    invisible to torch's own counters, the device's free memory is not.  None when torch has not
    set up CUDA in this child (a CPU engine): asking would create a CUDA context just to measure it."""
    try:
        import torch

        if not torch.cuda.is_initialized():
            return None
        free, total = torch.cuda.mem_get_info()
    except Exception:
        return None
    return total - free, total


# Exceptions that mean "this input is not audio ffmpeg/libsndfile can decode".
_UNDECODABLE = {"NoBackendError", "LibsndfileError", "CouldntDecodeError", "AudioFileError", "InvalidAudioDataError"}


def _no_space(e: BaseException | None) -> bool:
    """A full disk anywhere in the chain; audio-separator rewraps OSErrors, keeping only their text."""
    seen = 0
    while e is not None and seen < 10:
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or f"[Errno {errno.ENOSPC}]" in str(e):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def _describe(e: Exception, job) -> str:
    """One line for the user: this host's directories are no business of theirs."""
    if type(e).__name__ in _UNDECODABLE:
        return f"{audio_probe.NOT_AUDIO}: {type(e).__name__}"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = text.replace(job.workdir + os.sep, "").replace(job.audio_path, "the input")[:400]
    return f"separation failed: {type(e).__name__}: {text}" if text else f"separation failed: {type(e).__name__}"


def _separate(models: _Models, job) -> dict[str, str]:
    """The task's stems, as its plan says: one model's, several models' (named <model>.<stem>), or
    an ensemble's."""
    limit = models.settings.max_audio_seconds
    info = audio_probe.probe(job.audio_path)
    audio_probe.check(info, limit)
    plan = job.plan or Plan((job.model,))
    if len(plan.models) == 1:
        return _finished(_separate_with(models, job, info), job)
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
        return _finished(stems, job)
    stems = {}
    for model, own in zip(plan.models, per_model):
        for stem, path in _finished(own, dataclasses.replace(job, model=model)).items():
            key = plan.stem_key(model, stem)
            stems[key] = os.path.join(job.workdir, key + Path(path).suffix)
            os.replace(path, stems[key])
    return stems


def _finished(stems: dict[str, str], job) -> dict[str, str]:
    if not stems and job.options.get("single_stem") is None:
        raise RuntimeError("audio-separator produced no stems")
    return job_options.finish(stems, job.options, job.output_format)


def _separate_with(models: _Models, job, info: audio_probe.AudioInfo, several: bool = False) -> dict[str, str]:
    """*job.model*'s stems of the input, whole or in chunks; *several*: one of the task's models, so
    an option for another architecture is left to the models it fits."""
    limit = models.settings.max_audio_seconds
    separator = models.get(job.model)
    instance = separator.model_instance
    instance.output_format = job.output_format.upper()
    with bounded_decode.limited(limit, job.audio_path, info), job_options.applied(instance, job.options, several):
        surveyed = None
        if models.chunking.needed(info.seconds):
            surveyed = models.survey(job.audio_path, instance.sample_rate, info.seconds)
        if surveyed is not None and models.chunking.needed(surveyed.seconds):
            return _separate_in_chunks(models, separator, job, surveyed)
        return _separate_whole(separator, job, info, limit)


def _separate_whole(separator, job, info: audio_probe.AudioInfo, limit: float) -> dict[str, str]:
    # The models are stereo and audio-separator only widens mono: more channels are folded
    # down by ffmpeg, which knows the surround layouts' downmix matrices.
    audio_path = _downmix(job, info.channels, limit) if info.channels > 2 else job.audio_path
    try:
        return _run_model(separator, audio_path, job.workdir)
    finally:
        if audio_path != job.audio_path:
            os.unlink(audio_path)


def _separate_in_chunks(models: _Models, separator, job, surveyed: long_audio.Survey) -> dict[str, str]:
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


class _Models:
    """One audio-separator Separator per model, each loaded and warmed up on first use."""

    def __init__(self, settings, meter: progress_meter.Meter, announce):
        """*announce(model)*: a model loaded (and warmed up) for a task, after the first."""
        self.settings = settings
        self.chunking = long_audio.Chunking(settings.chunk_seconds, settings.chunk_overlap_seconds)
        self._surveyed: tuple | None = None  # the last input's survey: a task's models share it
        self.meter = meter
        self.announce = announce
        self._loaded = {}
        self.described: dict[str, dict] = {}  # what the heartbeat tells of each loaded model
        self.device = "unknown"

    def get(self, model: str):
        """*model*'s separator, loaded (and warmed up) for the job that names it if need be: the job's
        step says so meanwhile.  Beyond max_loaded_models, the least recently used is unloaded first."""
        if model not in self._loaded:
            self.meter.step(f"loading model {model}")
            while len(self._loaded) >= self.settings.max_loaded_models:
                self._unload(next(iter(self._loaded)))
            self.load(model)
            if self.settings.warm_up:
                with self.meter.quiet():  # the warm-up clip's progress is not the job's
                    self.warm(model)
            self.announce(model)
            self.meter.step(f"separating with {model}")
        self._loaded[model] = self._loaded.pop(model)  # the most recently used goes last
        return self._loaded[model]

    def survey(self, path: str, rate: int, declared: float | None) -> long_audio.Survey:
        """long_audio.survey of *path*, once for all the models of a task."""
        key = (path, os.stat(path).st_mtime_ns, rate)
        if self._surveyed is None or self._surveyed[0] != key:
            self._surveyed = (key, long_audio.survey(path, rate, self.settings.max_audio_seconds, declared))
        return self._surveyed[1]

    def _unload(self, model: str) -> None:
        del self._loaded[model]
        self.described.pop(model, None)
        gc.collect()  # the separator holds the weights in cycles: free them before the next load
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
        log.info("model unloaded to make room", model=model, max_loaded_models=self.settings.max_loaded_models)

    def warm(self, model: str) -> engine_warmup.Warmup:
        """The loaded *model*'s warm-up separation, in the processor's output format; a model whose
        warm-up fails is dropped, so that the next task naming it loads it afresh."""
        fmt = self.settings.output_format

        def separate(clip: str, workdir: str) -> dict[str, str]:
            return _separate(self, Job("warm-up", clip, model, fmt, workdir))

        try:
            warmup = engine_warmup.run(model, separate)
        except BaseException:
            self._loaded.pop(model, None)
            self.described.pop(model, None)
            raise
        # The warm-up's stems are the names this model's results carry, whatever the architecture.
        self.described[model]["stems"] = sorted(warmup.stems)
        self.described[model]["warm"] = True
        log.info("model warmed up", model=model, warmup_s=round(warmup.seconds, 2), stems=list(warmup.stems),
                 output_format=fmt, audio_s=engine_warmup.CLIP_SECONDS, directory=warmup.directory)
        return warmup

    def load(self, model: str) -> None:
        if model not in self._loaded:
            from audio_separator.separator import Separator

            separator = Separator(
                log_level=logging.WARNING,
                model_file_dir=self.settings.model_dir,
                output_dir=self.settings.output_dir,
                output_format=self.settings.output_format.upper(),
                mdx_params={"hop_length": self.settings.mdx_hop_length, "segment_size": self.settings.mdx_segment_size,
                            "overlap": 0.25, "batch_size": self.settings.mdx_batch_size, "enable_denoise": False},
            )
            try:
                separator.load_model(model_filename=model)
            except SystemExit as e:
                # audio-separator's MDXC/Roformer path calls sys.exit(1) when a checkpoint will not load
                # (mdxc_separator.py); caught here, it is one clear failed load instead of a dead engine.
                raise RuntimeError(f"audio-separator gave up loading it (sys.exit({e.code}); its log above "
                                   "says why)") from None
            self.device = str(separator.torch_device)
            self._loaded[model] = separator
            instance = separator.model_instance
            stems = [str(s).lower().replace(" ", "_") for s in (getattr(instance, "primary_stem_name", None),
                                                                 getattr(instance, "secondary_stem_name", None)) if s]
            self.described[model] = {"model": model, "architecture": job_options.architecture(instance),
                                     "stems": stems, "device": self.device, "warm": False,
                                     "execution_provider": device_check.execution_provider(separator)}
            progress_meter.install(self.meter)  # audio-separator's modules are imported by now


def _beat(heartbeat) -> None:
    while True:
        heartbeat.value = time.monotonic()
        time.sleep(0.5)
