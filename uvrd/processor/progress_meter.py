"""A job's progress in the engine child, and the point where a cancellation stops it.

audio-separator reports nothing to its caller while it separates, but every architecture walks
the audio in a ``tqdm`` loop (MDX's chunks, VR's patches, MDXC/Roformer's chunks, Demucs's
segments).  :func:`install` puts :meth:`Meter.tqdm` in place of ``tqdm`` in those modules: each
turn of the loop moves the job's fraction on and is the point where a requested cancellation
raises :class:`Cancelled`.  Nothing here imports torch.

The fraction of a job is the models' share, ``(index + within) / models``, where *within* is the
loop's fraction scaled into the part of a model's time that the loop takes (the rest is reading
the input and writing the stems).  It never goes back: Demucs runs its loop once per shift and
per model of a bag, so for Demucs the model's share fills on the first pass and holds.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterable

from uvrd.processor.engine_protocol import Progress

# The part of one model's time the separation loop takes; reading and writing share the rest.
LOOP_START, LOOP_END = 0.05, 0.95
# Loops that are not the separation: VR reads each frequency band of the input in one.
NOT_SEPARATION = frozenset({"loading_mix"})
# audio-separator's modules that run a separation loop, and how each imports tqdm.
HOOKED = {
    "audio_separator.separator.architectures.mdx_separator": "function",
    "audio_separator.separator.architectures.vr_separator": "function",
    "audio_separator.separator.architectures.mdxc_separator": "function",
    "audio_separator.separator.uvr_lib_v5.demucs.apply": "module",
    "audio_separator.separator.uvr_lib_v5.demucs.utils": "module",
}


class Cancelled(Exception):
    """The parent asked for this job to stop."""


class Meter:
    def __init__(self, send: Callable[[Progress], None], cancel_requested: Callable[[], bool],
                 min_interval: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self._send = send
        self._cancel_requested = cancel_requested
        self._min_interval = min_interval
        self._clock = clock
        self._models = 1
        self._index = 0
        self._part, self._parts = 0, 1  # a long input's chunks: the model's work is in parts
        self._step = ""
        self._fraction = 0.0
        self._sent_at = float("-inf")
        self._sent_fraction = -1.0
        self._active = False  # between jobs (and in a warm-up) nothing is sent

    @property
    def fraction(self) -> float:
        return self._fraction

    def begin(self, models: int) -> None:
        """A new job of *models* separations."""
        self._models, self._index, self._fraction, self._step = max(1, models), 0, 0.0, ""
        self._part, self._parts = 0, 1
        self._sent_at, self._sent_fraction = float("-inf"), -1.0
        self._active = True

    def end(self) -> None:
        self._active = False

    @contextlib.contextmanager
    def quiet(self):
        """Nothing sent meanwhile (a model's warm-up inside a job); cancellation still stops it."""
        active, self._active = self._active, False
        try:
            yield
        finally:
            self._active = active

    def model(self, index: int, step: str) -> None:
        """The job's model number *index* (from 0) starts; *step* says what it does."""
        self.check()
        self._index, self._part, self._parts = index, 0, 1
        self._report(0.0, step)

    def step(self, step: str) -> None:
        """What the job does now changes (a model loads), at the same fraction."""
        self.check()
        self._report(0.0, step)

    def part(self, index: int, parts: int, step: str) -> None:
        """The model's work is in *parts* pieces (a long input's chunks); piece *index* (from 0) starts."""
        self.check()
        self._part, self._parts = index, max(1, parts)
        self._report(0.0, step)

    def check(self) -> None:
        if self._cancel_requested():
            raise Cancelled()

    def tqdm(self, iterable: Iterable | None = None, *args, total: int | None = None, **kwargs):
        """Stands in for ``tqdm.tqdm``: the same items, with progress and a cancellation point
        at each."""
        return self.loop(iterable, total, sys._getframe(1).f_code.co_name)

    def loop(self, iterable, total: int | None, caller: str):
        """:meth:`tqdm`'s turns over *iterable*, for a loop in the function named *caller*."""
        if total is None:
            try:
                total = len(iterable)
            except TypeError:
                total = None
        return self._turns(iterable, total if caller not in NOT_SEPARATION else None)

    def _turns(self, iterable, total: int | None):
        for done, item in enumerate(iterable, start=1):
            self.check()
            yield item
            if total:
                self._report(LOOP_START + (LOOP_END - LOOP_START) * min(done / total, 1.0), self._step,
                             last=done >= total)
        self.check()

    def _report(self, within: float, step: str, last: bool = False) -> None:
        """*last*: the loop's final turn, sent whatever the interval (the stems are written next)."""
        if not self._active:
            return
        within = (self._part + within) / self._parts
        fraction = max(self._fraction, min(1.0, (self._index + within) / self._models))
        changed_step = step != self._step
        self._fraction, self._step = fraction, step
        now = self._clock()
        due = now - self._sent_at >= self._min_interval or last
        if changed_step or (fraction - self._sent_fraction >= 0.01 and due):
            self._sent_at, self._sent_fraction = now, fraction
            self._send(Progress(round(fraction, 4), step, self._models * self._parts))


class Meters:
    """The meter of the job each thread of the engine child runs (two jobs may be in the child at
    once, device_gate.py), or *idle* on a thread that runs none (the load and warm-up at start)."""

    def __init__(self, idle: Meter):
        self._idle = idle
        self._local = threading.local()

    @property
    def current(self) -> Meter:
        return getattr(self._local, "meter", None) or self._idle

    @contextlib.contextmanager
    def use(self, meter: Meter):
        """*meter* is this thread's while it lasts."""
        self._local.meter = meter
        try:
            yield
        finally:
            self._local.meter = None

    def tqdm(self, iterable: Iterable | None = None, *args, total: int | None = None, **kwargs):
        """:meth:`Meter.tqdm` of this thread's meter."""
        return self.current.loop(iterable, total, sys._getframe(1).f_code.co_name)

    def model(self, index: int, step: str) -> None:
        self.current.model(index, step)

    def step(self, step: str) -> None:
        self.current.step(step)

    def part(self, index: int, parts: int, step: str) -> None:
        self.current.part(index, parts, step)

    def check(self) -> None:
        self.current.check()

    def quiet(self):
        return self.current.quiet()


def install(meter: Meter | Meters) -> None:
    """Route audio-separator's separation loops through *meter* (its modules are imported here)."""
    import importlib
    import types

    for name, how in HOOKED.items():
        module = importlib.import_module(name)
        if how == "function":
            module.tqdm = meter.tqdm
        else:  # ``import tqdm`` then ``tqdm.tqdm(...)``
            module.tqdm = types.SimpleNamespace(tqdm=meter.tqdm)
