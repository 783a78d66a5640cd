"""Two jobs in the engine child at once, overlapping only where the model's device is concerned.

On an accelerator a job's forward is short, and what audio-separator does around it on the CPU (the
input read and normalised before, the secondary stem and the stems written after) left the device
idle between two forwards.  The pipeline sends the engine child the next task's job while the one
before is still in it (engine.py's ``submit_ahead``), and the child runs each job on a thread of its
own, taking turns through a :class:`Gate`:

- the **CPU turn**: a job holds it for everything it does outside its forwards, so two jobs' steps
  never interleave (audio-separator's objects and the per-job patches are not made for threads);
- the **device**: a job holds it for a forward, and lets the CPU turn go meanwhile; so the next
  job's steps before its forward run while this forward runs, and this job's steps after it while
  the next forward runs.  One forward at a time: the device's memory holds one job's working set.

Only the forwards named in :data:`FORWARDS` let the CPU turn go; a job on any other architecture
holds it from start to end, as one job at a time always did.  With one job in the child (the
sequential order, the warm-up) the gate changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
from collections.abc import Iterator

# The architectures' forward: the method that runs the model over the whole input, by its module and
# class.  MDX's ``demix`` also runs a pass without the model (``is_match_mix``): that one is CPU work.
FORWARDS = {
    ("audio_separator.separator.architectures.mdx_separator", "MDXSeparator"): "demix",
    ("audio_separator.separator.architectures.mdxc_separator", "MDXCSeparator"): "demix",
}
NO_MODEL_FLAG = "is_match_mix"  # MDX's: its own second argument


class Gate:
    """The CPU turn and the device, each held by one job's thread at a time."""

    def __init__(self) -> None:
        self._cpu = threading.Lock()
        self._device = threading.Lock()
        self._local = threading.local()  # whether this thread holds the CPU turn (the warm-up's does not)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """A job's time in the child: the CPU turn, let go only inside :meth:`device`."""
        with self._cpu:
            self._local.holding = True
            try:
                yield
            finally:
                self._local.holding = False

    @contextlib.contextmanager
    def device(self) -> Iterator[None]:
        """A forward: the device taken, the CPU turn let go for its length and taken back after (in
        that order, so the job waiting for the device gets it as this forward ends)."""
        if not getattr(self._local, "holding", False):
            with self._device:  # a thread outside any job's turn (the warm-up at start): nothing to let go
                yield
            return
        self._cpu.release()
        try:
            with self._device:
                yield
        finally:
            self._cpu.acquire()


def install(gate: Gate) -> None:
    """Each architecture's forward in :data:`FORWARDS` runs inside *gate*'s :meth:`Gate.device`."""
    for (module_name, class_name), method in FORWARDS.items():
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue  # not in this audio-separator: its jobs keep the CPU turn throughout
        forward = getattr(cls, method)
        if getattr(forward, "_uvrd_gated", False):
            continue
        setattr(cls, method, _gated(forward, gate))


def _gated(forward, gate: Gate):
    @functools.wraps(forward)
    def run(self, mix, *args, **kwargs):
        if kwargs.get(NO_MODEL_FLAG) is True or (args and args[0] is True and NO_MODEL_FLAG in forward.__code__.co_varnames[:3]):
            return forward(self, mix, *args, **kwargs)  # no model in it: the job's own CPU work
        with gate.device():
            return forward(self, mix, *args, **kwargs)
    run._uvrd_gated = True  # type: ignore[attr-defined]
    return run
