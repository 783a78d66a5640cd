"""The OpenAPI 3.0 description of the API, served at GET /openapi.json.

Built from the configuration, so the models and formats it lists are the
ones this server takes.  The tests run schemathesis against it and the live
server: every status a handler can answer is listed here.
"""

from __future__ import annotations

from uvrd import __version__
from uvrd.api.audio_types import DESCRIPTION as AUDIO_FORMATS
from uvrd.api.batch import MAX_FILENAME_CHARS
from uvrd.api.forms import MAX_FORM_FIELDS
from uvrd.config import DEFAULT_PRIORITY, OUTPUT_FORMATS, PRIORITIES, Config
from uvrd import separation_options, separation_plan
from uvrd.boards.status import STATES
from uvrd.keys.record import AUDIO_SECONDS_BOUND, CONFIG_TOKEN_PREFIX, MAX_ACTIVE_BOUND, SCOPES
from uvrd.messages import EVENTS, KEY_NAME_RE, MAX_URL_CHARS, TASK_UUID_RE

JSON = "application/json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, headers: dict | None = None) -> dict:
    response = {"description": description, "content": {JSON: {"schema": _ref("Error")}}}
    if headers:
        response["headers"] = headers
    return response


_CHALLENGE = {"WWW-Authenticate": {"description": "The authentication scheme to use", "schema": {"type": "string"}}}
_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}}

UNAUTHORIZED = _error("Missing or invalid credentials (an unknown or revoked key)", _CHALLENGE)
FORBIDDEN = _error("The key's scope does not allow this call: it needs an operator key")
NO_TASK = "No such task, or another key's (the same answer: a task of another key cannot be told from none)"
GONE = {"description": "The task expired (its expires_at passed) or its stems were deleted on request: its "
                       "stems and input are deleted (or about to be, by the next retention sweep). The sentence "
                       "and expired_at or stems_deleted_at say when. Only the task's key or an operator gets "
                       "this; any other key gets 404",
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Gone"}}}}


def _submission_responses() -> dict:
    return {
        "202": {
            "description": "Queued: the task is in Kafka and will end in exactly one webhook call",
            "headers": {"Location": {"description": "The task's status URL", "schema": {"type": "string"}}},
            "content": {JSON: {"schema": _ref("TaskAccepted")}},
        },
        "400": _error("The body cannot be parsed (JSON), a field is missing or invalid, a URL is refused (not "
                      "http(s), does not resolve, or names a non-public address), or the audio is empty"),
        "401": UNAUTHORIZED,
        "408": _error("The client stopped sending the body for longer than the server waits"),
        "413": _error("The audio is over the upload limit, or a JSON body over 64 KiB"),
        "415": _error(f"The body is not the expected media type, or the audio is not {AUDIO_FORMATS}"),
        "502": _error("The audio URL could not be fetched or did not answer 2xx"),
        "504": _error("The audio URL's download did not finish within the server's time limit"),
        "503": _error("Kafka or the audio store did not take the task; nothing was queued", _RETRY),
    }


def _create_task_responses(max_files: int) -> dict:
    """POST /v1/tasks also takes forms, whose several audio files make a batch (uvrd/api/batch.py)."""
    part = " (in a batch, 'part' names the file; nothing was queued)"
    return {
        **_submission_responses(),
        "202": {
            "description": "Queued: every task is in Kafka and will end in exactly one webhook call. An audio URL "
                           "or one file: TaskAccepted, with Location; two or more files: BatchAccepted, one task "
                           "per file in the order sent",
            "headers": {"Location": {"description": "The task's status URL (not for a batch)",
                                     "schema": {"type": "string"}}},
            "content": {JSON: {"schema": {"oneOf": [_ref("TaskAccepted"), _ref("BatchAccepted")]}}},
        },
        "400": _submission_error(
            f"The body cannot be parsed (JSON, or a form with a file part other than 'audio', more than {max_files} "
            f"'audio' files or more than {MAX_FORM_FIELDS} other fields), a field is missing or invalid, a URL is "
            "refused (not http(s), does not resolve, or names a non-public address), or the audio is empty" + part),
        "413": _submission_error("The request (a batch's files together) or the audio is over the upload limit, or "
                                 "a JSON body over 64 KiB" + part),
        "415": _submission_error(f"The body is not the expected media type, or the audio is not {AUDIO_FORMATS}"
                                 + part),
        "503": _submission_error(
            "Kafka or the audio store did not take the task, and nothing was queued; or Kafka failed a batch part "
            "way (it takes a batch's tasks in order and stops at the first it fails), and 'tasks' says which are "
            "queued (they will run), which is unconfirmed (it may run) and which are not queued", _RETRY),
        "200": _repeat_response(),
        "409": _error("Another request with this Idempotency-Key is under way; send it again for its answer",
                      _RETRY),
        "422": _error("This Idempotency-Key was used by this key for a different request within 24 h"),
        "429": _error("The request would pass one of the key's quotas (max_active or audio_seconds_per_day; the "
                      "sentence names it); a batch is refused whole and nothing was queued", _RETRY),
    }


_QUOTA_PROPERTIES = {
    "max_active": {"type": "integer", "minimum": 1, "maximum": MAX_ACTIVE_BOUND, "nullable": True,
                   "description": "Tasks of the key queued or running at once; null: no limit"},
    "audio_seconds_per_day": {"type": "integer", "minimum": 1, "maximum": AUDIO_SECONDS_BOUND, "nullable": True,
                              "description": "Audio seconds the key may submit per UTC day; null: no limit"},
}
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
    "description": "1-255 printable ASCII characters: a repeat of the request by the same key within 24 h answers "
                   "the first one's tasks (200) and queues nothing; the same value with another request is a 422",
}


def _repeat_response() -> dict:
    state = {"type": "string", "description": "The task's state now"}
    one = {"type": "object", "required": ["task_uuid", "state", "status_url"],
           "properties": {"task_uuid": {"type": "string"}, "state": state,
                          "status_url": {"type": "string", "format": "uri"}}}
    many = {"type": "object", "required": ["tasks"], "properties": {"tasks": {"type": "array", "items": {
        "type": "object", "required": ["task_uuid", "state", "status_url"],
        "properties": {"task_uuid": {"type": "string"}, "state": state,
                       "status_url": {"type": "string", "format": "uri"},
                       "filename": {"type": "string", "nullable": True}}}}}}
    return {"description": "A repeat (same Idempotency-Key, same key, same request, within 24 h): the first "
                           "submission's tasks, as it answered them; nothing was queued",
            "content": {JSON: {"schema": {"oneOf": [one, many]}}}}


def _submission_error(description: str, headers: dict | None = None) -> dict:
    return {**_error(description, headers), "content": {JSON: {"schema": _ref("SubmissionError")}}}


def _batch_schemas(max_files: int) -> dict:
    filename = {"type": "string", "nullable": True, "maxLength": MAX_FILENAME_CHARS,
                "description": "The file name the client gave the part"}
    return {
        "BatchAccepted": {
            "type": "object", "required": ["tasks"],
            "properties": {"tasks": {"type": "array", "minItems": 2, "maxItems": max_files,
                                     "items": _ref("BatchTask"),
                                     "description": "One per audio file, in the order sent; each queued"}},
        },
        "BatchTask": {
            "type": "object", "required": ["state", "filename"],
            "properties": {
                "task_uuid": {"type": "string", "description": "Absent when not_queued"},
                "state": {"type": "string", "enum": ["queued", "unconfirmed", "not_queued"],
                          "description": "queued: in Kafka, it will run; unconfirmed: Kafka did not say, it may "
                                         "run (check status_url before submitting the file again); not_queued: "
                                         "it will not run, its audio is gone"},
                "status_url": {"type": "string", "format": "uri", "description": "Absent when not_queued"},
                "filename": filename,
            },
        },
        "SubmissionError": {
            "type": "object", "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "One sentence saying why"},
                "part": {"type": "object", "required": ["index", "filename"],
                         "description": "The batch's refused audio file",
                         "properties": {"index": {"type": "integer", "minimum": 0, "maximum": max_files - 1,
                                                  "description": "Among the audio files, from 0, in the order "
                                                                 "sent"},
                                        "filename": filename}},
                "tasks": {"type": "array", "items": _ref("BatchTask"),
                          "description": "A batch's 503: every file's fate, in the order sent"},
            },
        },
    }


def document(config: Config) -> dict:
    models = list(config.processor.models)
    max_files = config.api.max_files_per_request
    priority = {"type": "integer", "minimum": min(PRIORITIES), "maximum": max(PRIORITIES),
                "default": DEFAULT_PRIORITY, "description": "5 is the most urgent"}
    url = {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS, "pattern": "^https?://"}
    options = {
        "hook_url": {**url, "description": "Called with the result (POST, JSON) once the task ends; "
                                           "without it, follow the task at its status_url"},
        "model": {"type": "string", "enum": models, "description": f"Default: {config.processor.model}"},
        "output_format": {"type": "string", "enum": list(OUTPUT_FORMATS),
                          "description": f"Default: {config.processor.output_format}"},
        "priority": priority,
    }
    task_uuid = {"name": "task_uuid", "in": "path", "required": True,
                 "schema": {"type": "string", "pattern": f"^{TASK_UUID_RE.pattern}$"}}
    key_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "uvrd", "version": __version__,
                 "description": "Vocal/instrument separation: submit audio and a webhook URL, "
                                "follow the task, download its stems."},
        "servers": [{"url": config.api.public_url.rstrip("/")}],
        "paths": {
            "/v1/tasks": {"post": {
                "operationId": "createTask",
                "summary": "Submit audio (an upload or a URL the server fetches) for separation",
                "security": [{"bearerAuth": []}],
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {
                        "schema": _ref("UploadSubmission"),
                        "encoding": {"audio": {"contentType": "application/octet-stream, audio/*"}},
                    },
                    JSON: {"schema": _ref("UrlSubmission")},
                }},
                "parameters": [IDEMPOTENCY_HEADER],
                "responses": _create_task_responses(max_files),
            }, "get": {
                "operationId": "listTasks",
                "summary": "The caller's tasks (an operator key's: every task), newest first, a page at a time",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
                    {"name": "before", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "The next of the previous page: the tasks submitted before its last"},
                    {"name": "key", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Only the tasks this key submitted (an operator's choice; a submit key "
                                    "sees only its own anyway)"},
                ],
                "responses": {
                    "200": {"description": "A page of tasks, each as GET /v1/tasks/{task_uuid} answers it",
                            "content": {JSON: {"schema": {
                                "type": "object", "required": ["tasks", "next"], "properties": {
                                    "tasks": {"type": "array", "items": _ref("TaskStatus")},
                                    "next": {"type": "string", "nullable": True,
                                             "description": "Pass it as before for the next page; null on the "
                                                            "last"}}}}}},
                    "400": _error("A bad limit or before"),
                    "401": UNAUTHORIZED,
                },
            }},
            "/v1/whoami": {"get": {
                "operationId": "whoami",
                "summary": "The caller's key: its name and scope",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": {"description": "The key", "content": {JSON: {"schema": {
                        "type": "object", "required": ["name", "scope"], "properties": {
                            "name": {"type": "string"}, "scope": {"type": "string", "enum": list(SCOPES)}}}}}},
                    "401": UNAUTHORIZED,
                },
            }},
            "/v1/keys": {"get": {
                "operationId": "listKeys",
                "summary": "Every key: the configured api.tokens (config-token-N) and the named keys, never a "
                           "secret",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": {"description": "The keys", "content": {JSON: {"schema": {
                        "type": "object", "required": ["keys"],
                        "properties": {"keys": {"type": "array", "items": _ref("Key")}}}}}},
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                },
            }, "post": {
                "operationId": "addKey",
                "summary": "Add a named key; its token is in this answer only",
                "security": [{"bearerAuth": []}],
                "requestBody": {"required": True, "content": {JSON: {"schema": {
                    "type": "object", "required": ["name", "scope"], "properties": {
                        "name": {"type": "string", "pattern": f"^{KEY_NAME_RE.pattern}$",
                                 "description": f"Not starting with {CONFIG_TOKEN_PREFIX}"},
                        "scope": {"type": "string", "enum": list(SCOPES)}, **_QUOTA_PROPERTIES}}}}},
                "responses": {
                    "201": {"description": "Added: token is shown once, and only its hash is kept",
                            "content": {JSON: {"schema": {"allOf": [_ref("Key"), {
                                "type": "object", "required": ["token"],
                                "properties": {"token": {"type": "string"}}}]}}}},
                    "400": _error("The body is not a JSON object, or a bad name, scope or quota; nothing was written"),
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                    "409": _error("A key of this name exists, or existed (a revoked name is not given out again)"),
                    "413": _error("A body over 64 KiB"),
                    "503": _error("Kafka did not answer or did not confirm the key; asking again is safe", _RETRY),
                },
            }},
            "/v1/usage": {"get": {
                "operationId": "usage",
                "summary": "A key's use against its quotas: tasks queued or running, audio seconds today (UTC)",
                "security": [{"bearerAuth": []}],
                "parameters": [{"name": "key", "in": "query", "required": False, "schema": {"type": "string"},
                                "description": "Another key's usage (an operator's choice); default: the caller's"}],
                "responses": {
                    "200": {"description": "The key's use and quotas", "content": {JSON: {"schema": _ref("Usage")}}},
                    "401": UNAUTHORIZED,
                    "403": _error("A submit key asked about another key"),
                    "404": _error("No such key"),
                },
            }},
            "/v1/keys/{name}": {"patch": {
                "operationId": "setKeyQuota",
                "summary": "Change a named key's quotas (a member left out keeps its value, null removes it)",
                "security": [{"bearerAuth": []}],
                "parameters": [key_name],
                "requestBody": {"required": True, "content": {JSON: {"schema": {
                    "type": "object", "minProperties": 1, "additionalProperties": False,
                    "properties": _QUOTA_PROPERTIES}}}},
                "responses": {
                    "200": {"description": "The key, with its quotas", "content": {JSON: {"schema": _ref("Key")}}},
                    "400": _error("The body is not a JSON object of quotas, or a quota is not a whole number within "
                                  "its bounds; nothing was written"),
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                    "404": _error("No such key"),
                    "409": _error("The key is revoked, or one of the configured api.tokens (which have no quota)"),
                    "413": _error("A body over 64 KiB"),
                    "503": _error("Kafka did not answer or did not confirm the change; asking again is safe", _RETRY),
                },
            }, "delete": {
                "operationId": "revokeKey",
                "summary": "Revoke a named key: every api refuses it within seconds",
                "security": [{"bearerAuth": []}],
                "parameters": [key_name],
                "responses": {
                    "200": {"description": "Revoked (asking again answers the same)",
                            "content": {JSON: {"schema": _ref("Key")}}},
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                    "404": _error("No such key"),
                    "409": _error("The key is one of the configured api.tokens: change the configuration"),
                    "503": _error("Kafka did not answer or did not confirm the revocation; asking again is safe",
                                  _RETRY),
                },
            }},
            "/generate": {"post": {
                "operationId": "generate",
                "summary": "The previous service's submission endpoint, kept for its clients",
                "deprecated": True,
                "security": [{"basicAuth": []}],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("UrlSubmission")}}},
                "responses": _submission_responses(),
            }},
            "/v1/tasks/{task_uuid}": {"get": {
                "operationId": "getTask",
                "summary": "Where the task stands, with signed links to its stems once it succeeded",
                "security": [{"bearerAuth": []}],
                "parameters": [task_uuid],
                "responses": {
                    "200": {"description": "The task's merged status",
                            "content": {JSON: {"schema": _ref("TaskStatus")}}},
                    "401": UNAUTHORIZED,
                    "404": _error(NO_TASK),
                    "410": GONE,
                    "503": _error("This server is still loading the status of tasks", _RETRY),
                },
            }, "delete": {
                "operationId": "cancelTask",
                "summary": "Ask for the task to be cancelled",
                "description": "A queued task is skipped when a processor reaches it; a running one is stopped "
                               "within seconds. The task then ends once, in the state cancelled, with one webhook "
                               "if it has a hook; a task that ended before a processor saw the request keeps its "
                               "outcome. Asking again is safe.",
                "security": [{"bearerAuth": []}],
                "parameters": [task_uuid],
                "responses": {
                    "202": {"description": "The cancellation is recorded",
                            "content": {JSON: {"schema": _ref("CancelRequested")}}},
                    "401": UNAUTHORIZED,
                    "404": _error(NO_TASK),
                    "409": _error("The task has already ended"),
                    "410": GONE,
                    "503": _error("The request could not be recorded (asking again is safe), or this server is "
                                  "still loading the status of tasks", _RETRY),
                },
            }},
            "/v1/tasks/{task_uuid}/stems": {"delete": {
                "operationId": "deleteTaskStems",
                "summary": "Delete a finished task's stems and input now, rather than at its expires_at",
                "description": "Recorded on the status topic, so every api of the deployment then answers 410 "
                               "for the task and its stem links; the files go at once from the bucket or this "
                               "host's spool and output directories (what cannot be deleted now, the uploader's "
                               "retention sweep deletes). The task's key or an operator only.",
                "security": [{"bearerAuth": []}],
                "parameters": [task_uuid],
                "responses": {
                    "200": {"description": "Deleted", "content": {JSON: {"schema": _ref("StemsDeleted")}}},
                    "401": UNAUTHORIZED,
                    "404": _error(NO_TASK),
                    "409": _error("The task has not finished yet (queued or running): cancel it first"),
                    "410": GONE,
                    "503": _error("The deletion could not be recorded, and nothing was deleted (asking again is "
                                  "safe), or this server is still loading the status of tasks", _RETRY),
                },
            }},
            "/v1/tasks/{task_uuid}/stems/{stem}": {"get": {
                "operationId": "getStem",
                "summary": "Download one stem, with a bearer token or a signed link",
                "security": [{"bearerAuth": []}, {"signedLink": []}],
                "parameters": [
                    task_uuid,
                    {"name": "stem", "in": "path", "required": True, "schema": {"type": "string"},
                     "description": "A stem name from the task's status, such as vocals or instrumental"},
                    {"name": "expires", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^[0-9]+$"},
                     "description": "Expiry (Unix seconds) of a signed link; goes with sig"},
                ],
                "responses": {
                    "200": {"description": "The stem's audio file", "content": {
                        "audio/*": {"schema": {"type": "string", "format": "binary"}},
                        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    }},
                    "401": UNAUTHORIZED,
                    "403": _error("The signed link is invalid or has expired"),
                    "404": _error("No such task or stem, another key's task, or the file is gone"),
                    "410": GONE,
                    "503": _error("This server is still loading the status of tasks", _RETRY),
                },
            }},
            "/v1/workers": {"get": {
                "operationId": "listWorkers",
                "summary": "Every processor's latest heartbeat: what it holds and what it does",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": {"description": "The workers, alive ones first", "content": {JSON: {"schema": {
                        "type": "object", "required": ["workers"],
                        "properties": {"workers": {"type": "array", "items": _ref("Worker")}}}}}},
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                },
            }},
            "/v1/models": {"get": {
                "operationId": "listModels",
                "summary": "The models a task may name, where each is loaded, and audio-separator's ensemble presets",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": {"description": "The served models", "content": {JSON: {"schema": _ref("Models")}}},
                    "401": UNAUTHORIZED,
                },
            }},
            "/v1/queues": {"get": {
                "operationId": "listQueues",
                "summary": "Tasks waiting per priority, results waiting for their webhook, dead letters",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": {"description": "Backlogs, from the broker's offsets",
                            "content": {JSON: {"schema": _ref("Queues")}}},
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                    "503": _error("Kafka did not answer", _RETRY),
                },
            }},
            "/v1/dead-letters": {"get": {
                "operationId": "listDeadLetters",
                "summary": "The latest dead letters, newest first, with why and whence",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {"name": "task_uuid", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "error", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Only those whose error holds this text (any case)"},
                    {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Only those from this ISO 8601 time on (UTC if it names no zone)"},
                    {"name": "until", "in": "query", "required": False, "schema": {"type": "string"},
                     "description": "Only those before this ISO 8601 time"},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}},
                ],
                "responses": {
                    "200": {"description": "count covers every dead letter; the list the latest", "content": {
                        JSON: {"schema": {"type": "object", "required": ["count", "dead_letters"], "properties": {
                            "count": {"type": "integer", "minimum": 0},
                            "dead_letters": {"type": "array", "items": {"type": "object", "properties": {
                                "offset": {"type": "integer"}, "partition": {"type": "integer"},
                                "task_uuid": {"type": "string", "nullable": True},
                                "error": {"type": "string", "nullable": True},
                                "source": {"type": "string", "nullable": True,
                                           "description": "topic/partition/offset of the record it copies"},
                                "stage": {"type": "string", "nullable": True, "enum": ["processor", "uploader", None]},
                                "timestamp_ms": {"type": "integer"}}}}}}}}},
                    "400": _error("A bad limit or time"),
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                },
            }},
            "/v1/dead-letters/{partition}/{offset}": {"get": {
                "operationId": "showDeadLetter",
                "summary": "One dead letter with the record it copies (the task message, or the result)",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {"name": "partition", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "offset", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "200": {"description": "The letter, as listed, and its record", "content": {JSON: {"schema": {
                        "type": "object", "required": ["partition", "offset", "record"], "properties": {
                            "partition": {"type": "integer"}, "offset": {"type": "integer"},
                            "task_uuid": {"type": "string", "nullable": True},
                            "error": {"type": "string", "nullable": True},
                            "source": {"type": "string", "nullable": True},
                            "stage": {"type": "string", "nullable": True},
                            "timestamp_ms": {"type": "integer"},
                            "record": {"description": "The copied record: its JSON, or its text"}}}}}},
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                    "404": _error("No dead letter there"),
                    "503": _error("Kafka did not answer"),
                },
            }},
            "/v1/dead-letters/{partition}/{offset}/replay": {"post": {
                "operationId": "replayDeadLetter",
                "summary": "Send a dead letter again, exactly once: a failed task back to its queue, or an "
                           "undelivered result back to the uploader",
                "security": [{"bearerAuth": []}],
                "parameters": [
                    {"name": "partition", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "offset", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                ],
                "responses": {
                    "202": {"description": "Replayed: the task or result is queued again, with its replay number",
                            "content": {JSON: {"schema": {
                                "type": "object", "required": ["task_uuid", "replay", "requeued_to", "stage"],
                                "properties": {
                                    "task_uuid": {"type": "string"}, "replay": {"type": "integer", "minimum": 1},
                                    "requeued_to": {"type": "string"},
                                    "stage": {"type": "string", "enum": ["processor", "uploader"]},
                                    "status_url": {"type": "string"}}}}}},
                    "401": UNAUTHORIZED,
                    "403": FORBIDDEN,
                    "404": _error("No dead letter there"),
                    "409": _error("The letter was replayed already"),
                    "422": _error("The letter cannot be replayed (its record would be refused again)"),
                    "503": _error("Kafka did not answer or did not confirm the replay; asking again is safe"),
                },
            }},
            "/healthz": {"get": {
                "operationId": "health",
                "summary": "Liveness: the process serves requests",
                "security": [],
                "responses": {"200": {"description": "Alive", "content": {JSON: {"schema": {
                    "type": "object", "required": ["status"], "properties": {"status": {"type": "string",
                                                                                         "enum": ["ok"]}}}}}}},
            }},
            "/readyz": {"get": {
                "operationId": "ready",
                "summary": "Readiness: Kafka answers and the status of tasks is loaded",
                "security": [],
                "responses": {
                    "200": {"description": "Ready", "content": {JSON: {"schema": {
                        "type": "object", "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": ["ready"]},
                                       "execution_providers": {
                                           "type": "object", "additionalProperties": {"type": "integer"},
                                           "description": "Live workers by where their model really runs "
                                                          "(CUDAExecutionProvider, CPUExecutionProvider, "
                                                          "torch:cuda, ...), from their heartbeats"}}}}}},
                    "503": _error("Not ready; the error says why"),
                },
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document",
                                      "content": {JSON: {"schema": {"type": "object"}}}}},
            }},
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer",
                               "description": "A named key's token (POST /v1/keys), or one of api.tokens (an "
                                              "operator key). A submit key sees only its own tasks"},
                "basicAuth": {"type": "http", "scheme": "basic",
                              "description": "One of api.basic_auth (user:password); POST /generate only"},
                "signedLink": {"type": "apiKey", "in": "query", "name": "sig",
                               "description": "Signature of a stem link from a status answer or a webhook, "
                                              "with its expires parameter"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "string", "description": "One sentence saying why"}}},
                "UploadSubmission": {
                    "type": "object", "required": ["audio"],
                    "properties": {"audio": {"type": "array", "minItems": 1, "maxItems": max_files,
                                             "items": {"type": "string", "format": "binary"},
                                             "description": f"The audio file ({AUDIO_FORMATS}), or up to "
                                                            f"{max_files} of them, one part each: each file is "
                                                            "its own task, with the other fields"}, **options,
                                   "options": {"type": "string", "maxLength": separation_options.MAX_OPTIONS_BYTES,
                                               "description": "A SeparationOptions object as JSON text"},
                                   "models": {"type": "string", "description": "Models (JSON text of a list, or "
                                                                               "names joined by commas): see Models"},
                                   "ensemble": {"type": "string", "description": "An Ensemble as JSON text, or a "
                                                                                 "preset's name"},
                                   "events": {"type": "string", "description": "Webhook events besides the final "
                                                                               "one: names joined by commas, or JSON "
                                                                               "text of Events"}},
                },
                "UrlSubmission": {
                    "type": "object", "required": ["audio"],
                    "properties": {"audio": {**url, "description": "An http(s) URL the server fetches the "
                                                                   "audio from"}, **options,
                                   "options": _ref("SeparationOptions"), "models": _ref("Models"),
                                   "ensemble": _ref("Ensemble"), "events": _ref("Events")},
                },
                "SeparationOptions": separation_options.openapi_schema(),
                **separation_plan.openapi_schemas(),
                "Events": {"type": "array", "uniqueItems": True, "items": {"type": "string", "enum": list(EVENTS)},
                           "description": "Webhook events the task opts into, each a signed POST with an "
                                          "X-Uvrd-Event header and a body of task_uuid, event, timestamp and the "
                                          "event's fields (progress and step; attempt and worker; reason). Best "
                                          "effort: one attempt each, possibly after the final delivery, which "
                                          "alone is exactly once. Needs hook_url."},
                **_batch_schemas(max_files),
                "Key": {
                    "type": "object", "required": ["name", "scope"],
                    "properties": {"name": {"type": "string"}, "scope": {"type": "string", "enum": list(SCOPES)},
                                   "created_at": {"type": "string", "format": "date-time"},
                                   "revoked_at": {"type": "string", "format": "date-time", "nullable": True},
                                   "configured": {"type": "boolean",
                                                  "description": "One of api.tokens, named config-token-N"},
                                   "quota": {"type": "object", "properties": _QUOTA_PROPERTIES}},
                },
                "Usage": {
                    "type": "object",
                    "required": ["key", "day", "resets_at", "active", "audio_seconds_today", "quota"],
                    "properties": {
                        "key": {"type": "string"},
                        "day": {"type": "string", "format": "date", "description": "The current UTC day"},
                        "resets_at": {"type": "string", "format": "date-time",
                                      "description": "When the day's audio seconds start again from 0"},
                        "active": {"type": "integer", "minimum": 0,
                                   "description": "The key's tasks queued or running"},
                        "audio_seconds_today": {"type": "number", "minimum": 0,
                                                "description": "Audio seconds of the key's tasks submitted today"},
                        "quota": {"type": "object", "required": ["max_active", "audio_seconds_per_day"],
                                  "properties": _QUOTA_PROPERTIES}}},
                "TaskAccepted": {
                    "type": "object", "required": ["task_uuid", "state", "status_url"],
                    "properties": {"task_uuid": {"type": "string"}, "state": {"type": "string", "enum": ["queued"]},
                                   "status_url": {"type": "string", "format": "uri"}},
                },
                "Worker": {
                    "type": "object", "required": ["worker", "alive", "seconds_since"],
                    "properties": {
                        "worker": {"type": "string", "description": "The processor's transactional id"},
                        "alive": {"type": "boolean", "description": "Its last heartbeat is younger than three "
                                                                     "intervals"},
                        "seconds_since": {"type": "number", "minimum": 0},
                        "state": {"type": "string",
                                  "enum": ["loading", "warming", "idle", "busy", "waiting", "stopping"]},
                        "host": {"type": "string"}, "pid": {"type": "integer"}, "version": {"type": "string"},
                        "started_at": {"type": "string", "format": "date-time"},
                        "updated_at": {"type": "string", "format": "date-time"},
                        "interval_s": {"type": "number"},
                        "device": {"type": "string", "nullable": True},
                        "execution_provider": {"type": "string", "nullable": True,
                                               "description": "Where its model really runs: an ONNX Runtime "
                                                              "provider, or torch:cuda / torch:cpu"},
                        "trouble": {"type": "string", "nullable": True},
                        "models": {"type": "array", "items": {"type": "object", "properties": {
                            "model": {"type": "string"}, "architecture": {"type": "string", "nullable": True},
                            "stems": {"type": "array", "items": {"type": "string"}}, "warm": {"type": "boolean"},
                            "device": {"type": "string", "nullable": True},
                            "execution_provider": {"type": "string", "nullable": True}}}},
                        "task": {"type": "object", "nullable": True, "properties": {
                            "task_uuid": {"type": "string"}, "seconds": {"type": "number"},
                            "progress": {"type": "number", "minimum": 0, "maximum": 1}, "step": {"type": "string"}}},
                    },
                },
                "Models": {
                    "type": "object", "required": ["models", "ensemble_presets"],
                    "properties": {
                        "models": {"type": "array", "items": {
                            "type": "object", "required": ["model", "default", "stems", "loaded_on", "warm"],
                            "properties": {
                                "model": {"type": "string"}, "default": {"type": "boolean"},
                                "architecture": {"type": "string", "nullable": True,
                                                 "enum": ["MDX", "VR", "Demucs", "MDXC", None]},
                                "stems": {"type": "array", "items": {"type": "string"}},
                                "loaded_on": {"type": "array", "items": {"type": "string"},
                                              "description": "The live workers holding it"},
                                "warm": {"type": "boolean"}}}},
                        "ensemble_presets": {"type": "array", "items": {
                            "type": "object", "required": ["preset", "models", "served"],
                            "properties": {
                                "preset": {"type": "string"}, "name": {"type": "string", "nullable": True},
                                "description": {"type": "string", "nullable": True},
                                "models": {"type": "array", "items": {"type": "string"}},
                                "algorithm": {"type": "string", "nullable": True},
                                "weights": {"type": "array", "items": {"type": "number"}, "nullable": True},
                                "served": {"type": "boolean",
                                           "description": "Every model of the preset is served here"}}}},
                    },
                },
                "Queues": {
                    "type": "object", "required": ["tasks", "results", "dead_letters"],
                    "properties": {
                        "tasks": {"type": "array", "items": {
                            "type": "object", "required": ["priority", "topic", "end", "committed", "backlog"],
                            "properties": {"priority": {"type": "integer"}, "topic": {"type": "string"},
                                           "end": {"type": "integer", "minimum": 0},
                                           "committed": {"type": "integer", "minimum": 0},
                                           "backlog": {"type": "integer", "minimum": 0,
                                                       "description": "Tasks not yet committed by the "
                                                                      "processors' group"},
                                           "at_least": {"type": "boolean",
                                                        "description": "The backlog is longer than counted"}}}},
                        "results": {"type": "object", "required": ["topic", "end", "committed", "backlog"],
                                    "properties": {"topic": {"type": "string"}, "end": {"type": "integer"},
                                                   "committed": {"type": "integer"},
                                                   "backlog": {"type": "integer", "minimum": 0},
                                                   "at_least": {"type": "boolean"}}},
                        "dead_letters": {"type": "integer", "minimum": 0},
                    },
                },
                "CancelRequested": {
                    "type": "object", "required": ["task_uuid", "state", "cancel_requested_at", "status_url"],
                    "properties": {"task_uuid": {"type": "string"},
                                   "state": {"type": "string", "enum": list(STATES),
                                             "description": "The task's state when the request was recorded"},
                                   "cancel_requested_at": {"type": "string", "format": "date-time"},
                                   "status_url": {"type": "string", "format": "uri"}},
                },
                "StemsDeleted": {
                    "type": "object", "required": ["task_uuid", "state", "stems_deleted_at", "files_deleted"],
                    "properties": {"task_uuid": {"type": "string"},
                                   "state": {"type": "string", "enum": ["stems_deleted"]},
                                   "stems_deleted_at": {"type": "string", "format": "date-time"},
                                   "files_deleted": {"type": "boolean",
                                                     "description": "false: the store failed; the deletion "
                                                                    "is recorded and the retention sweep "
                                                                    "deletes the files"}},
                },
                "Gone": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string", "description": "A sentence saying when"},
                                   "expired_at": {"type": "string", "format": "date-time",
                                                  "description": "The task's expires_at, once past"},
                                   "stems_deleted_at": {"type": "string", "format": "date-time",
                                                        "description": "When its stems were deleted on "
                                                                       "request"}},
                },
                "TaskStatus": {
                    "type": "object", "required": ["task_uuid", "state", "expires_at"],
                    "properties": {
                        "task_uuid": {"type": "string"},
                        "state": {"type": "string", "enum": [s for s in STATES if s != "stems_deleted"]},
                        "expires_at": {"type": "string", "format": "date-time", "nullable": True,
                                       "description": "When the task's stems and input are deleted and it "
                                                      "starts answering 410: its finished_at plus the "
                                                      "deployment's api.result_retention (7 days by default). "
                                                      "Null until the task has finished (queued, running, or "
                                                      "a replay under way)"},
                        "outcome": {"type": "string", "enum": ["succeeded", "failed", "cancelled"],
                                    "description": "How the task's work ended; it stays once the state moves on "
                                                   "to delivered or delivery_failed"},
                        "progress": {"type": "number", "minimum": 0, "maximum": 1,
                                     "description": "How far the separation has got, updated every few seconds "
                                                    "while it runs; 1 once it succeeded. A run interrupted by a "
                                                    "restart starts again from 0"},
                        "step": {"type": "string", "description": "What the separation is doing now"},
                        "cancel_requested_at": {"type": "string", "format": "date-time"},
                        "priority": {"type": "integer", "minimum": min(PRIORITIES), "maximum": max(PRIORITIES)},
                        "model": {"type": "string"},
                        "submitted_at": {"type": "string", "format": "date-time"},
                        "started_at": {"type": "string", "format": "date-time"},
                        "finished_at": {"type": "string", "format": "date-time"},
                        "delivered_at": {"type": "string", "format": "date-time"},
                        "error_message": {"type": "string"},
                        "replay": {"type": "integer", "minimum": 1,
                                   "description": "How many times an operator replayed the task's dead letter; "
                                                  "the state is the latest replay's"},
                        "replayed_at": {"type": "string", "format": "date-time"},
                        "key": {"type": "string", "description": "The name of the key that submitted it"},
                        "filename": {"type": "string", "description": "The uploaded file's name, as sent"},
                        "stems": {"type": "object", "additionalProperties": {"type": "string", "format": "uri"},
                                  "description": "Stem name to a signed download link"},
                    },
                },
            },
        },
    }
