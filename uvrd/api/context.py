"""What every request handler of one worker process shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import current_app

from uvrd.api.auth import Authenticator
from uvrd.api.backend import Backend
from uvrd.api.quota_gate import QuotaGate
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
    quotas: QuotaGate = field(default_factory=QuotaGate)  # this worker's quota admissions

    def close(self) -> None:
        self.backend.close()
        self.storage.close()


def current() -> ApiContext:
    return current_app.extensions[EXTENSION]
