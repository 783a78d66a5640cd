"""A child started with parent_death.preexec() ends when its parent dies, SIGKILL included."""

from __future__ import annotations

import subprocess
import sys

from support import process_gone, wait_until

# A parent that starts a long child (as the engine starts ffmpeg), prints its pid, then waits.
PARENT = """
import subprocess, time
from uvrd.runtime import parent_death
child = subprocess.Popen(["sleep", "600"], preexec_fn=parent_death.preexec())
print(child.pid, flush=True)
time.sleep(600)
"""


def start_parent() -> tuple[subprocess.Popen, int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    return parent, int(parent.stdout.readline())


def test_a_tied_child_dies_when_its_parent_is_killed():
    parent, child = start_parent()
    assert not process_gone(child)
    parent.kill()
    parent.wait()
    wait_until(lambda: process_gone(child), 10, "the child to die with its parent")

