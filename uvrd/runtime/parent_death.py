"""A child process that ends when the process that started it dies, however it dies.

Linux's ``PR_SET_PDEATHSIG``: the kernel sends the child a signal when its
parent exits, SIGKILL included, so nothing a supervisor started outlives it
holding ports, GPUs or files.  The setting survives ``execve`` (it is cleared
only for set-user-ID programs), so a ``subprocess`` child can set it between
fork and exec.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL, parent: int | None = None) -> None:
    """Ask for *sig* when the parent dies; if *parent* (its pid) is already gone, take it now."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, sig)
    except OSError:
        return  # not glibc: nothing to ask; the supervisor's own clean-up still runs on a stop
    # The parent may have died between fork and prctl: then nobody will send the signal.
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)


def preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """For ``subprocess.Popen(preexec_fn=...)``: the child dies with the process calling Popen.

    The kernel ties the signal to the thread that forked, so call Popen from a thread that lives as
    long as the process (the main thread).
    """
    return functools.partial(die_with_parent, sig, os.getpid())
