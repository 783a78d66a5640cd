"""What every request handler of one worker process shares."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ..config import Config
from ..storage import Storage
from .auth import Authenticator
from .backend import Backend
from .spooler import Spool

EXTENSION = "uvrd"


@dataclass(frozen=True)
class ApiContext:
    config: Config
    auth: Authenticator
    spool: Spool
    backend: Backend
    storage: Storage

    def close(self) -> None:
        self.backend.close()
        self.storage.close()


def current() -> ApiContext:
    return current_app.extensions[EXTENSION]
