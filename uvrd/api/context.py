"""What every request handler of one worker process shares."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from uvrd.api.auth import Authenticator
from uvrd.api.backend import Backend
from uvrd.api.spooler import Spool
from uvrd.config import Config
from uvrd.storage import Storage

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
