"""Cached builds from the pinned wheels: made once, never seen half-made."""

from __future__ import annotations

import os
import threading

import pytest

from support import wait_until
from devtools import pinned_wheels


def test_a_failed_build_leaves_nothing_that_looks_finished_and_the_next_call_builds(tmp_path):
    target = tmp_path / "model.onnx"

    def fail(partial):
        partial.write_bytes(b"half a model")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        pinned_wheels.build_once(target, fail)
    assert not target.exists()
    assert pinned_wheels.build_once(target, lambda partial: partial.write_bytes(b"model")) is True
    assert target.read_bytes() == b"model"
    assert pinned_wheels.build_once(target, lambda partial: pytest.fail("rebuilt")) is False
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.onnx.lock", "model.onnx"]


def _waiting_on_lock(path):
    """Whether some process or thread waits on a lock of *path* (a '->' line in /proc/locks)."""
    inode = os.stat(path).st_ino
    return any(line.split()[1] == "->" and line.split()[6].endswith(f":{inode}")
               for line in open("/proc/locks").read().splitlines() if len(line.split()) > 6)


def test_concurrent_callers_wait_for_one_build(tmp_path):
    target = tmp_path / "excerpt"
    calls, entered, release = [], threading.Event(), threading.Event()

    def make(partial):
        calls.append(partial)
        entered.set()
        release.wait(30)
        partial.mkdir()
        (partial / "mixture.wav").write_bytes(b"audio")

    results = []
    first = threading.Thread(target=lambda: results.append(pinned_wheels.build_once(target, make)))
    first.start()
    assert entered.wait(30)
    second = threading.Thread(target=lambda: results.append(pinned_wheels.build_once(target, make)))
    second.start()
    try:
        wait_until(lambda: _waiting_on_lock(tmp_path / ".excerpt.lock"), 30, "the second caller to wait on the lock")
    finally:
        release.set()
        first.join(30)
        second.join(30)
    assert len(calls) == 1 and sorted(results) == [False, True]
    assert (target / "mixture.wav").read_bytes() == b"audio"
