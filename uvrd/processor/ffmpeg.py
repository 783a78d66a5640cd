"""ffmpeg writing one file (in the engine child, or the pipeline's store stage): run with no stdin,
dying with its caller, and on failure no half-written target left and one line of why."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from uvrd.runtime import parent_death


def write(args: list[str], target: str, nice: int = 0) -> str | None:
    """``ffmpeg -nostdin -v error -y ARGS TARGET``: None once *target* is written, else ffmpeg's last
    error line (at most 300 characters), with *target* removed.  *nice*: added to ffmpeg's niceness
    (work beside the model, which must not wait for it)."""
    dies_with_us = parent_death.preexec()

    def preexec() -> None:
        dies_with_us()
        if nice:
            os.nice(nice)
    run = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args, target], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, preexec_fn=preexec)
    if run.returncode == 0:
        return None
    Path(target).unlink(missing_ok=True)
    return (run.stderr.strip().splitlines() or ["ffmpeg failed"])[-1][:300]
