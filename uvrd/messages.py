"""Task and result messages: JSON, keyed by task_uuid, compatible with the old pipeline.

Task:    {"task_uuid", "audio_path", "hook_url"} + optional "model", "output_format", "options",
         and "models" (a set of stems from each) or "ensemble" (one combined set)
         (separation_options.py), "key": the API key that submitted it (absent before keys), and
         "audio_seconds": its input's length as the api measured it (absent before fair share by
         seconds: the processor's turns count such a task as one quantum, processor/key_turns.py)
Result:  {"task_uuid", "success": true, "vocals_path", "instrumental_path", "stems", "hook_url"}
         {"task_uuid", "success": false, "error_message", "hook_url"}
         {"task_uuid", "success": false, "cancelled": true, "error_message", "hook_url", "cancel_requested_at"}

"storage" says where a message's references live: "local" (absent in old messages: paths on this
host, as above) or "s3" (object keys: "audio_key" in a task, "vocals_key", "instrumental_key" and
the values of "stems" in a result).

Parsing never trusts the bytes: every way a message can be wrong raises
:class:`BadMessage` with a sentence a user can act on, and whatever could be
salvaged (task_uuid, hook_url) so the failure still reaches them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any
from urllib.parse import urlsplit

from uvrd import separation_options, separation_plan
from uvrd.outcomes import RejectCause
from uvrd.separation_options import NO_OPTIONS, SeparationOptions

MAX_MESSAGE_BYTES = 1 << 20
MAX_REPLAYS = 1000
MAX_PATH_CHARS = 4096
MAX_URL_CHARS = 2048
# S3's own limit on a key's length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
STORAGE_KINDS = ("local", "s3")
# task_uuid names a directory of outputs: it must be a plain file-name token.
TASK_UUID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# The name of the API key that submitted a task (uvrd/keys/record.py): its owner.
KEY_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class BadMessage(Exception):
    def __init__(self, message: str, task_uuid: str | None = None, hook_url: str | None = None,
                 cause: RejectCause = "unreadable"):
        super().__init__(message)
        self.task_uuid = task_uuid
        self.hook_url = hook_url
        self.cause = cause  # the Rejected outcome's (outcomes.py)


@dataclass(frozen=True)
class Task:
    task_uuid: str
    audio_path: str | None  # with storage "local"
    hook_url: str | None  # None: nobody to call back; the status topic still tells
    model: str | None = None
    output_format: str | None = None
    submitted_at: str | None = None
    storage: str = "local"
    audio_key: str | None = None  # with storage "s3"
    options: SeparationOptions = NO_OPTIONS
    plan: separation_plan.Plan | None = None  # "models" or "ensemble"; None: "model" alone
    events: tuple[str, ...] = ()  # the webhook events besides the final one it opted into (EVENTS)
    replay: int = 0  # how many times an operator replayed it from the dead letters (uvrd/boards/replays.py)
    key: str | None = None  # the API key that submitted it (its owner); None in messages from before keys
    audio_seconds: float | None = None  # its input's length as the api measured it; None when not said

    @property
    def audio_ref(self) -> str | None:
        """The input's reference in this task's storage: a path or an object key (parse_task sets it)."""
        return self.audio_key if self.storage == "s3" else self.audio_path


def parse_task(value: bytes | None, key: bytes | None = None) -> Task:
    key_uuid = _key_uuid(key)
    if value is None:
        raise BadMessage("task message is empty (a tombstone)", key_uuid)
    if len(value) > MAX_MESSAGE_BYTES:
        raise BadMessage(f"task message is {len(value)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit", key_uuid)
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadMessage(f"task message is not UTF-8 ({e.reason} at byte {e.start})", key_uuid) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BadMessage(f"task message is not JSON: {e.msg} at line {e.lineno} column {e.colno}", key_uuid) from None
    except RecursionError:
        raise BadMessage("task message is JSON nested too deeply", key_uuid) from None
    if not isinstance(data, dict):
        raise BadMessage(f"task message must be a JSON object, not {_json_type(data)}", key_uuid)

    task_uuid = data.get("task_uuid")
    salvaged_uuid = task_uuid if isinstance(task_uuid, str) and TASK_UUID_RE.fullmatch(task_uuid) else key_uuid
    hook_url = data.get("hook_url")
    salvaged_hook = hook_url if isinstance(hook_url, str) and _is_http_url(hook_url) and _is_unicode(hook_url) else None

    def bad(message: str) -> BadMessage:
        return BadMessage(message, salvaged_uuid, salvaged_hook)

    storage = data.get("storage", "local")
    if storage not in STORAGE_KINDS:
        shown = repr(storage) if isinstance(storage, str) and _is_unicode(storage) else _json_type(storage)
        raise bad(f"task field 'storage' must be one of {', '.join(STORAGE_KINDS)}, not {shown[:80]}")
    ref_field = "audio_key" if storage == "s3" else "audio_path"
    for name in ("task_uuid", ref_field):
        if name not in data:
            raise bad(f"task is missing the field {name!r}")
    for name in ("task_uuid", ref_field, "hook_url"):
        if name in data and not isinstance(data[name], str) and not (name == "hook_url" and data[name] is None):
            raise bad(f"task field {name!r} must be a string, not {_json_type(data[name])}")
    for name in (ref_field, "hook_url", "model", "output_format"):
        # JSON may escape a lone surrogate ("\ud800"): valid JSON, but no file name, URL or
        # result message can carry it, so it is refused here rather than crashing on use.
        if isinstance(data.get(name), str) and not _is_unicode(data[name]):
            raise bad(f"task field {name!r} is not valid Unicode (it holds a lone surrogate escape)")
    if not isinstance(task_uuid, str) or not TASK_UUID_RE.fullmatch(task_uuid):
        raise bad("task field 'task_uuid' must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
    ref = data[ref_field]
    if storage == "s3":
        problem = key_problem(ref)
        if problem:
            raise bad(f"task field 'audio_key' {problem}")
    elif path_problem(ref):
        raise bad(f"task field 'audio_path' {path_problem(ref)}")
    if hook_url is not None and (len(hook_url) > MAX_URL_CHARS or not _is_http_url(hook_url)):
        raise bad("task field 'hook_url' must be an http:// or https:// URL with a host")
    optional: dict[str, Any] = {}
    for name in ("model", "output_format"):
        value_ = data.get(name)
        if value_ is None:
            continue
        if not isinstance(value_, str) or not value_.strip():
            raise bad(f"task field {name!r} must be a non-empty string, not {_json_type(value_)}")
        optional[name] = value_
    try:
        task_options = separation_options.parse(data.get("options"))
    except separation_options.OptionError as e:
        raise bad(f"task field 'options' is refused: {e}") from None
    if task_options.values:
        optional["options"] = task_options
    if "model" in optional and ("models" in data or "ensemble" in data):
        raise bad("give 'model' alone, or 'models' or 'ensemble' instead of it")
    try:
        plan = separation_plan.parse(data.get("models"), data.get("ensemble"))
    except separation_plan.PlanError as e:
        raise bad(f"task field {e}") from None
    if plan is not None:
        optional["plan"] = plan
    try:
        task_events = parse_events(data.get("events"))
    except ValueError as e:
        raise bad(f"task field {e}") from None
    if task_events:
        optional["events"] = task_events
    replay = data.get("replay", 0)
    if type(replay) is not int or not 0 <= replay <= MAX_REPLAYS:
        raise bad(f"task field 'replay' must be a whole number from 0 to {MAX_REPLAYS}")
    if replay:
        optional["replay"] = replay
    owner = data.get("key")
    if owner is not None and (not isinstance(owner, str) or not KEY_NAME_RE.fullmatch(owner)):
        raise bad("task field 'key' must be an API key's name: 1-64 letters, digits, '.', '_' or '-'")
    if owner is not None:
        optional["key"] = owner
    if (seconds := audio_seconds_of(data)) is not None:
        optional["audio_seconds"] = seconds
    submitted_at = data.get("submitted_at")
    if isinstance(submitted_at, str) and len(submitted_at) <= 64 and _is_unicode(submitted_at):
        optional["submitted_at"] = submitted_at  # informational only: never worth failing a task over
    if storage == "s3":
        return Task(task_uuid=task_uuid, audio_path=None, hook_url=hook_url, storage="s3", audio_key=ref, **optional)
    return Task(task_uuid=task_uuid, audio_path=ref, hook_url=hook_url, **optional)


def audio_seconds_of(data: dict[str, Any]) -> float | None:
    """A task message's "audio_seconds", or None when absent or not a length (a finite number, not
    negative): it only orders the queue (the processor's key turns), never worth failing a task over."""
    seconds = data.get("audio_seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) or seconds < 0:
        return None
    return float(seconds)


def delivery_id(task_uuid: str, replay: int = 0) -> str:
    """What one webhook delivers: a task's result, or the result of its *replay*-th replay.  The
    uploader's once-per-task memory and the receiver's Idempotency-Key are this."""
    return f"{task_uuid}/replay-{replay}" if replay else task_uuid


def replay_of(message: dict[str, Any]) -> int:
    """The replay number a task or result message carries (0: never replayed)."""
    replay = message.get("replay", 0)
    return replay if type(replay) is int and replay > 0 else 0


# The webhook events a task may opt into, besides the final delivery (which every task with a hook gets).
EVENTS = ("started", "progress", "requeued")


def parse_events(value: Any) -> tuple[str, ...]:
    """A task's ``events``: a list of EVENTS (or, from a form, their names joined by commas)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v in EVENTS for v in value):
        raise ValueError(f"'events' must be a list of {', '.join(EVENTS)}")
    return tuple(e for e in EVENTS if e in value)


def event_message(task: Task, event: str, **fields: Any) -> dict[str, Any]:
    """One webhook event of *task* (topics.events): what the uploader posts, with the hook to post it to."""
    return {"task_uuid": task.task_uuid, "hook_url": task.hook_url, "event": event, "timestamp": now_iso(), **fields}


def path_problem(path: Any) -> str | None:
    """Why *path* is no path a file can be opened by, or None: ``open()`` and ``os.path.realpath()``
    raise on a NUL byte or a lone surrogate escape, where a message's reader wants a sentence."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_CHARS or "\0" in path:
        return f"must be a path of 1-{MAX_PATH_CHARS} characters without NUL"
    if not _is_unicode(path):
        return "is not valid Unicode (it holds a lone surrogate escape)"
    return None


def key_problem(key: Any, prefix: str | None = None) -> str | None:
    """Why *key* is no object key uvrd would write (under *prefix* when given), or None.

    Stores treat keys as opaque, but a '..' segment or a leading '/' means something to
    the proxies, mirrors and local copies in between: refused like ``../`` in a path.
    """
    if not isinstance(key, str) or not key:
        return "must be a non-empty string"
    if not _is_unicode(key) or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        return f"must be valid Unicode of at most {MAX_KEY_BYTES} bytes"
    if key.startswith("/") or any(ord(c) < 32 or c == "\x7f" for c in key) or "\\" in key:
        return "must not start with '/' or hold control characters or backslashes"
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "must not hold empty, '.' or '..' segments"
    under = prefix.split("/") if prefix is not None else []
    if len(parts) <= len(under) or parts[:len(under)] != under:
        return f"must lie under the configured prefix {(prefix or '') + '/'!r}"
    return None


def success_result(task: Task, stems: dict[str, str], model: str, storage: str = "local",
                   **times: str | None) -> dict[str, Any]:
    kind = "key" if storage == "s3" else "path"
    return {
        "task_uuid": task.task_uuid,
        "success": True,
        "storage": storage,
        f"vocals_{kind}": stems.get("vocals"),
        f"instrumental_{kind}": stems.get("instrumental"),
        "stems": stems,
        "model": model,
        "hook_url": task.hook_url,
        **_times(times),
    }


def failure_result(task_uuid: str | None, hook_url: str | None, error_message: str, **times: str | None) -> dict[str, Any]:
    return {
        "task_uuid": task_uuid,
        "success": False,
        "error_message": error_message,
        "hook_url": hook_url,
        **_times(times),
    }


def cancelled_result(task: Task, requested_at: str, **times: str | None) -> dict[str, Any]:
    """A failure to old readers (success false, with a reason), and "cancelled" to new ones."""
    return {**failure_result(task.task_uuid, task.hook_url, "cancelled on request", **times),
            "cancelled": True, "cancel_requested_at": requested_at}


def _times(times: dict[str, str | None]) -> dict[str, str]:
    """submitted_at / started_at as known, and finished_at now."""
    return {**{k: v for k, v in times.items() if v}, "finished_at": now_iso()}


def json_object(value: bytes | None) -> dict[str, Any] | None:
    """A record's value as a JSON object; None for a tombstone or for anything that is not one
    (a board skips such a record rather than stopping on it).  JSON nested too deeply for the parser
    is none either: it raises RecursionError, not ValueError, and one hostile record on a task topic
    would otherwise stop every processor that reads it ahead (read_ahead.py)."""
    try:
        data = json.loads(value) if value else None
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _key_uuid(key: bytes | None) -> str | None:
    if not key:
        return None
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if TASK_UUID_RE.fullmatch(text) else None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0


def _json_type(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
