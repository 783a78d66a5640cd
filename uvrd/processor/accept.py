"""Whether this processor can run a task record: the message read and checked against its configuration.

A record it cannot run is :class:`~uvrd.outcomes.Rejected` with one clear error, never retried:
an unreadable message, an unknown model or output format, audio in another storage backend, or
(once fetching finds it) an input that is not there.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from uvrd import known_models, messages, separation_plan
from uvrd.config import OUTPUT_FORMATS, ProcessorConfig
from uvrd.outcomes import Rejected, RejectCause
from uvrd.separation_plan import Plan

log = structlog.get_logger("uvrd.processor")

MAX_ERROR_CHARS = 1000


@dataclass(frozen=True)
class Accepted:
    """A task this processor can run, with the model and output format it runs with."""

    task: messages.Task
    plan: Plan  # the task's models, a preset resolved; one model for a plain task
    output_format: str

    @property
    def model(self) -> str:
        """The first (for a plain task, the only) model: what the task's log and status name."""
        return self.plan.models[0]


def accept(record, cfg: ProcessorConfig, storage: str) -> Accepted | Rejected:
    """*record*'s task, if a processor of *cfg* with *storage* storage can run it."""
    task = None
    try:
        task = messages.parse_task(record.value, record.key)
        try:
            plan = separation_plan.resolve(task.plan or Plan((task.model or cfg.model,)), known_models.ensemble_presets())
        except separation_plan.PlanError as e:
            raise messages.BadMessage(f"task field {e}", task.task_uuid, task.hook_url, "plan") from None
        unserved = [m for m in plan.models if m not in cfg.models]
        if unserved:
            needed = f" (ensemble preset {plan.ensemble.preset!r} needs {', '.join(plan.models)})" if (
                plan.ensemble and plan.ensemble.preset) else ""
            raise messages.BadMessage(f"unknown model {unserved[0]!r}{needed}; this processor serves "
                                      f"{', '.join(cfg.models)}", task.task_uuid, task.hook_url,
                                      "unknown_model")
        fmt = (task.output_format or cfg.output_format).lower()
        if fmt not in OUTPUT_FORMATS:
            raise messages.BadMessage(f"unknown output_format {task.output_format!r}; use one of "
                                      f"{', '.join(OUTPUT_FORMATS)}", task.task_uuid, task.hook_url,
                                      "unknown_output_format")
        try:
            task.options.check_format(fmt)
        except ValueError as e:
            raise messages.BadMessage(f"task field 'options' is refused: {e}", task.task_uuid, task.hook_url,
                                      "options") from None
        if task.storage != storage:
            raise messages.BadMessage(f"the task's audio is in {task.storage} storage, but this processor is "
                                      f"configured for {storage} storage (storage.backend)",
                                      task.task_uuid, task.hook_url, "other_storage")
    except messages.BadMessage as e:
        return rejected(e, task)
    return Accepted(task, plan, fmt)


def rejected(e: messages.BadMessage, task: messages.Task | None, cause: RejectCause | None = None) -> Rejected:
    """*e* as a Rejected outcome (logged); *task* is what parsed of the message, if anything;
    *cause*: the metrics' word for it, if not *e*'s."""
    if e.task_uuid:
        structlog.contextvars.bind_contextvars(task_uuid=e.task_uuid)
    # The error quotes the offending value, which may be a field of most of a megabyte.
    error = str(e) if len(str(e)) <= MAX_ERROR_CHARS else str(e)[:MAX_ERROR_CHARS] + "... (cut)"
    log.warning("task rejected", error=error)
    return Rejected(error, e.task_uuid, e.hook_url, task.submitted_at if task else None, cause or e.cause,
                    task.replay if task else 0)
