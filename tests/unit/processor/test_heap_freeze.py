"""heap_freeze.py: what is alive once a model is loaded is left out of later collections, and put
back under them while a model is unloaded."""

from __future__ import annotations

import gc
import weakref

from uvrd.processor import heap_freeze


class Cycle:
    def __init__(self):
        self.me = self


def test_frozen_objects_are_skipped_and_thawed_ones_collected():
    try:
        held = Cycle()
        heap_freeze.freeze()
        assert gc.get_freeze_count() > 0
        gone = weakref.ref(held)
        del held
        gc.collect()
        assert gone() is not None, "a frozen cycle outlives a collection: the per-file gc.collect() skips it"
        with heap_freeze.thawed():
            gc.collect()
            assert gone() is None, "thawed, an unloaded model's cycles are freed"
        assert gc.get_freeze_count() > 0, "frozen again after"
        fresh = Cycle()
        young = weakref.ref(fresh)
        del fresh
        gc.collect()
        assert young() is None, "what a job makes after the freeze is still collected"
    finally:
        gc.unfreeze()
