"""The engine child's long-lived objects kept out of Python's garbage collections.

audio-separator ends every file with ``gc.collect()`` (``CommonSeparator.clear_gpu_cache``, called
by ``Separator._separate_file`` whatever the device), and a full collection walks every object the
process holds: torch's, librosa's, numba's and the loaded models' modules, hundreds of thousands of
them.  On this project's 2-core machine that was 0.35 to 0.5 s per task, spent in the engine child
between two forwards, with the accelerator idle (docs/bench.md, section 10).

Once a model is loaded and warmed up, everything alive is long-lived: :func:`freeze` moves it to the
interpreter's permanent generation (``gc.freeze``), so each per-file collection walks only what the
job itself made, and still frees it.  Unloading a model needs its weights' cycles collected:
:func:`thawed` puts the frozen objects back under collection for that, and freezes again after.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


def freeze() -> None:
    """Everything alive now is left out of every later collection (collected once first, so no
    garbage is frozen with it)."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def thawed() -> Iterator[None]:
    """While it lasts, collections see every object again (a model's weights may be freed); frozen
    again when it ends."""
    gc.unfreeze()
    try:
        yield
    finally:
        freeze()
