"""A loop on a thread of its own whose failure surfaces in the test's thread."""

from __future__ import annotations

import threading


class Background:
    name = "background"

    def __init__(self):
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._guarded, name=self.name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end, wait for it, and raise what it raised (once)."""
        self.stopping.set()
        if self._thread.ident is not None:
            self._thread.join(300)
        error, self.error = self.error, None
        if error is not None:
            raise error

    def _guarded(self) -> None:
        try:
            self.loop()
        except BaseException as e:
            self.error = e

    def loop(self) -> None:
        raise NotImplementedError
