"""The engine child's models: one audio-separator Separator per model, loaded (and warmed up) on
first use, the least recently used unloaded beyond ``max_loaded_models``."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

import structlog

from uvrd.processor import device_check, engine_warmup, heap_freeze, job_options, long_audio, progress_meter
from uvrd.processor import engine_job
from uvrd.processor.engine_protocol import Job

log = structlog.get_logger("uvrd.engine.child")


class ModelCache:
    """One audio-separator Separator per model, each loaded and warmed up on first use."""

    def __init__(self, settings, meter: progress_meter.Meters, announce):
        """*announce(model)*: a model loaded (and warmed up) for a task, after the first."""
        self.settings = settings
        self.chunking = long_audio.Chunking(settings.chunk_seconds, settings.chunk_overlap_seconds)
        self._surveyed: tuple | None = None  # the last input's survey: a task's models share it
        self.meter = meter
        self.announce = announce
        self._loaded: dict[str, Any] = {}  # model -> its audio-separator Separator, least recently used first
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
            heap_freeze.freeze()  # the new model's objects are long-lived too
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
        with heap_freeze.thawed():  # the weights were frozen with everything else loaded (heap_freeze.py)
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
            return engine_job.separate(self, Job("warm-up", clip, model, fmt, workdir))

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
