"""GET /v1/workers, /v1/models, /v1/queues and /v1/dead-letters: the deployment as its processors'
heartbeats, the broker's offsets and the dead-letter topic tell it.  Only an operator key sees the
fleet (403 for a submit key); any key sees the models, which a task may name.

Every api instance reads the workers topic whole (boards/workers.py), so each answers the same.
A model is *served* when the configuration lists it (``processor.model`` and ``extra_models``): a
task may name it.  Whether it is loaded and warm, and on which workers, comes from the heartbeats;
its architecture and stems from them too, else from audio-separator's own catalogue.
"""

from __future__ import annotations

import math
from datetime import datetime, UTC

from flask import Blueprint, jsonify, request
from kafka.errors import KafkaError

from uvrd import known_models
from uvrd.api.context import current
from uvrd.api.errors import ApiError
from uvrd.boards import dead_letters, replays
from uvrd.metrics import api as api_metrics
from uvrd.outcomes import AlreadyReplayed, NotReplayable, Replayed, ReplayUnconfirmed

blueprint = Blueprint("fleet", __name__)

KEEP_LISTED = 1000  # as many as the dead-letter board keeps


@blueprint.get("/v1/workers")
def list_workers():
    api = current()
    api.auth.require_operator(request.headers)
    return jsonify(workers=api.backend.workers.workers())


@blueprint.get("/v1/models")
def list_models():
    api = current()
    api.auth.require_bearer(request.headers)
    cfg = api.config.processor
    alive = [w for w in api.backend.workers.workers() if w["alive"]]
    catalogue = known_models.known()
    models = []
    for name in cfg.models:
        held = _held(alive, name)
        reported = next((m for _, m in held), {})
        about = catalogue.get(name, {})
        models.append({
            "model": name, "default": name == cfg.model,
            "architecture": reported.get("architecture") or about.get("architecture"),
            "stems": reported.get("stems") or about.get("stems") or [],
            "loaded_on": [worker for worker, _ in held],
            "warm": any(m.get("warm") for _, m in held),
        })
    presets = [{"preset": key, **preset, "served": all(m in cfg.models for m in preset.get("models") or [])}
               for key, preset in known_models.ensemble_presets().items()]
    return jsonify(models=models, ensemble_presets=presets)


def _held(workers: list[dict], model: str) -> list[tuple[str, dict]]:
    """(worker, what it reports of *model*) for each of *workers* that holds it."""
    return [(w["worker"], m) for w in workers for m in (w.get("models") or []) if m.get("model") == model]


def reported_stems(workers: list[dict], model: str) -> tuple[str, ...] | None:
    """The stems a live worker's heartbeat says *model* writes, as the task's result names them;
    None until one has said (audio-separator's catalogue is not used: its names are not always
    those the model writes)."""
    alive = [w for w in workers if w.get("alive")]
    stems = next((m.get("stems") for _, m in _held(alive, model) if m.get("stems")), None)
    return tuple(stems) if isinstance(stems, list) and all(isinstance(s, str) for s in stems) else None


@blueprint.get("/v1/queues")
def list_queues():
    """Each priority's backlog of tasks, the results waiting for their webhook, the dead letters."""
    api = current()
    api.auth.require_operator(request.headers)
    try:
        queues = api.backend.queues.read()
    except KafkaError as e:
        raise ApiError(503, f"Kafka did not answer: {e}", {"Retry-After": "5"}) from None
    return jsonify(**queues, dead_letters=api.backend.dead_letters.count())


@blueprint.get("/v1/dead-letters")
def list_dead_letters():
    """The latest dead letters (newest first), each with why and whence; ``count`` covers them all.
    ``task_uuid``, ``error`` (a substring) and ``since``/``until`` (ISO 8601 times) narrow the list."""
    api = current()
    api.auth.require_operator(request.headers)
    board = api.backend.dead_letters
    entries = board.latest(KEEP_LISTED)
    task_uuid, error = request.args.get("task_uuid"), request.args.get("error")
    since, until = _time(request.args.get("since"), "since"), _time(request.args.get("until"), "until")
    if task_uuid:
        entries = [e for e in entries if e.get("task_uuid") == task_uuid]
    if error:
        entries = [e for e in entries if error.lower() in (e.get("error") or "").lower()]
    entries = [e for e in entries if since <= e.get("timestamp_ms", 0) < until]
    return jsonify(count=board.count(), dead_letters=entries[:_limit(request.args.get("limit"))])


@blueprint.get("/v1/dead-letters/<int:partition>/<int:offset>")
def show_dead_letter(partition: int, offset: int):
    """One dead letter with the record it copies (the task message or the result), read from Kafka."""
    api = current()
    api.auth.require_operator(request.headers)
    try:
        letter = dead_letters.read_letter(api.config.kafka, api.config.topics.dead_letter, partition, offset)
    except KafkaError as e:
        raise ApiError(503, f"Kafka did not answer: {e}", {"Retry-After": "5"}) from None
    if letter is None:
        raise ApiError(404, f"no dead letter at {partition}/{offset} of {api.config.topics.dead_letter}")
    return jsonify(letter)


@blueprint.post("/v1/dead-letters/<int:partition>/<int:offset>/replay")
def replay_dead_letter(partition: int, offset: int):
    """Send a dead letter again, once: a failed task back to its queue, an undelivered result back to
    the uploader (uvrd/boards/replays.py).  202 with the replay; 409 if it was replayed already."""
    api = current()
    api.auth.require_operator(request.headers)
    try:
        outcome = replays.replay(api.config.kafka, api.config.topics, partition, offset)
    except KafkaError as e:
        raise ApiError(503, f"Kafka did not answer: {e}", {"Retry-After": "5"}) from None
    match outcome:
        case None:
            raise ApiError(404, f"no dead letter at {partition}/{offset} of {api.config.topics.dead_letter}")
        case Replayed(task_uuid=task_uuid, replay=n, topic=topic, stage=stage):
            api_metrics.replayed("replayed", stage)
            return jsonify(task_uuid=task_uuid, replay=n, requeued_to=topic, stage=stage,
                           status_url=f"/v1/tasks/{task_uuid}"), 202
        case AlreadyReplayed(replayed_at=at, replay=n):
            api_metrics.replayed("already")
            raise ApiError(409, f"dead letter {partition}/{offset} was replayed already, at {at} (replay {n})")
        case NotReplayable(reason=reason):
            api_metrics.replayed("not_replayable")
            raise ApiError(422, f"dead letter {partition}/{offset} cannot be replayed: {reason}")
        case ReplayUnconfirmed(reason=reason):
            api_metrics.replayed("unconfirmed")
            raise ApiError(503, f"{reason}; asking again is safe", {"Retry-After": "5"})
    raise TypeError(f"no answer for {outcome!r}")


def _time(value: str | None, name: str) -> float:
    """An ISO 8601 time (UTC if it names no zone) as Kafka's milliseconds; no value: no bound."""
    if not value:
        return -math.inf if name == "since" else math.inf
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time such as 2026-11-28T08:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp() * 1000


def _limit(value: str | None) -> int:
    if value is None:
        return 50
    if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= KEEP_LISTED:
        raise ApiError(400, f"limit must be an integer from 1 to {KEEP_LISTED}")
    return int(value)
