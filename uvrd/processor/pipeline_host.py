"""What the pipelined processor's turns (pipeline_turns.py) use of the processor they run in: the
daemon's own steps for a task (accept's checks, the run, the settlement) and its clients.

Why a Protocol and not the Processor class: the processor builds its PipelineTurns, so the turns
naming the class would tie the two modules in a circle; this says, in one place, the part of the
processor the pipeline relies on.  daemon.Processor satisfies it: daemon.py is not yet checked by
mypy (pyproject.toml, issue #25 item 5), so tests/unit/processor/test_pipeline_host.py holds that.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from uvrd import messages
from uvrd.boards.cancellations import Cancellations
from uvrd.config import ProcessorConfig
from uvrd.kafka.group_member import Claim, GroupMember
from uvrd.outcomes import Abandoned, Cancelled, Failed, Rejected, StoreOutcome, Succeeded, TaskOutcome
from uvrd.processor.accept import Accepted
from uvrd.processor.engine_protocol import Job, Separated
from uvrd.processor.pipeline import Ahead
from uvrd.processor.priority import PriorityChooser
from uvrd.processor.separation import Separation
from uvrd.processor.task_events import TaskEvents
from uvrd.runtime.wait import Runtime
from uvrd.storage import Storage


class PipelineHost(Protocol):
    cfg: ProcessorConfig
    member: GroupMember | None
    runtime: Runtime | None
    storage: Storage
    priorities: PriorityChooser
    cancellations: Cancellations
    separation: Separation | None

    def next_record(self, timeout_ms: int = ...): ...

    def claim(self, record) -> Claim: ...

    def release(self, claim: Claim) -> None: ...

    def put_back(self, record) -> None: ...

    def ended_before(self, record, task_uuid: str | None, replay: int, claim: Claim) -> bool: ...

    def cancellation_of(self, task_uuid: str) -> str | None: ...

    def job_for(self, accepted: Accepted, audio: Path, decoded: Path | None, pipelined: bool) -> Callable[[str], Job]: ...

    def process(self, accepted: Accepted, claim: Claim, ahead: Ahead | None = None) -> TaskOutcome | Rejected | None: ...

    def store(self, task_uuid: str, ran: Separated, claim: Claim) -> StoreOutcome: ...

    def settle(self, record, task: messages.Task | None, outcome: Succeeded | Failed | Cancelled | Rejected,
               claim: Claim) -> None: ...

    def _stored_outcome(self, accepted: Accepted, ran: Separated, started_at: str, events: TaskEvents,
                        stored: StoreOutcome) -> Succeeded | Failed | Abandoned: ...
