"""The fields of a submission, checked before any audio is stored or fetched.

The same rules for a multipart form (every value a string) and a JSON body
(values typed): each refusal names the field and what it accepts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Mapping

from uvrd import known_models, messages, separation_options, separation_plan
from uvrd.peers import safehttp
from uvrd.api.errors import ApiError
from uvrd.config import DEFAULT_PRIORITY, OUTPUT_FORMATS, PRIORITIES
from uvrd.messages import MAX_URL_CHARS


@dataclass(frozen=True)
class Submission:
    hook_url: str | None  # None: nobody to call back; the client follows the task's status
    priority: int
    model: str | None = None
    output_format: str | None = None
    options: separation_options.SeparationOptions = separation_options.NO_OPTIONS
    plan: separation_plan.Plan | None = None  # "models" or "ensemble"
    events: tuple[str, ...] = ()  # webhook events besides the final one (messages.EVENTS)
    key: str | None = None  # the caller's key: who owns the tasks (set once authenticated, not a field)


def bad(message: str) -> ApiError:
    return ApiError(400, message)


def parse(fields: Mapping[str, Any], models: tuple[str, ...], allow_private: bool, form: bool,
          default_format: str) -> Submission:
    output_format = choice(fields.get("output_format"), "output_format", OUTPUT_FORMATS)
    return Submission(
        hook_url=hook_url(fields.get("hook_url"), allow_private),
        priority=priority(fields.get("priority"), form),
        model=choice(fields.get("model"), "model", models),
        output_format=output_format,
        options=options(fields.get("options"), output_format or default_format),
        plan=plan(fields, models),
        events=events(fields.get("events"), fields.get("hook_url")),
    )


def options(value: Any, output_format: str) -> separation_options.SeparationOptions:
    """The JSON object (its text in a form) of separation options, each within its bounds."""
    try:
        parsed = separation_options.parse(value)
        parsed.check_format(output_format)
    except separation_options.OptionError as e:
        raise bad(f"the field 'options' is refused: {e}") from None
    return parsed


def check_stem_names(submission: Submission, default_model: str,
                     stems_of: Callable[[str], tuple[str, ...] | None]) -> None:
    """400 for custom stem names that would give two of a model's stems one name, where *stems_of*
    knows the model's stems (its workers report them); where it does not yet, the processor fails
    the task with the same sentence.  An ensemble's stems are combined from all its models': the
    processor checks those."""
    plan = submission.plan
    if not submission.options.get("stem_names") or (plan is not None and plan.ensemble is not None):
        return
    for model in plan.models if plan is not None else (submission.model or default_model,):
        stems = stems_of(model)
        try:
            submission.options.final_names(stems or ())
        except separation_options.OptionError as e:
            raise bad(f"the field 'options' is refused: {e}") from None


def events(value: Any, hook: Any) -> tuple[str, ...]:
    """The webhook events the task opts into (a JSON list, or names joined by commas in a form)."""
    try:
        wanted = messages.parse_events(json.loads(value) if isinstance(value, str) and value.startswith("[") else value)
    except (ValueError, RecursionError) as e:
        raise bad(f"the field {e}" if str(e).startswith("'events'") else "the field 'events' is not valid JSON") from None
    if wanted and hook in (None, ""):
        raise bad("the field 'events' needs a hook_url to post them to")
    return wanted


def plan(fields: Mapping[str, Any], served: tuple[str, ...]) -> separation_plan.Plan | None:
    """Several models (``models``) or an ensemble (``ensemble``), each model one this deployment serves
    (a preset is resolved, and its models checked, by the processor)."""
    if fields.get("model") not in (None, "") and any(fields.get(f) not in (None, "") for f in ("models", "ensemble")):
        raise bad("give the field 'model' alone, or 'models' or 'ensemble' instead of it")
    try:
        parsed = separation_plan.parse(fields.get("models"), fields.get("ensemble"))
        resolved = parsed and separation_plan.resolve(parsed, known_models.ensemble_presets())
    except separation_plan.PlanError as e:
        raise bad(f"the field {e}") from None
    for model in resolved.models if resolved is not None else ():
        if model not in served:
            field = "ensemble" if resolved.ensemble is not None else "models"
            raise bad(f"the field {field!r} needs {model!r}, which this deployment does not serve; "
                      f"it serves {', '.join(served)}")
    return parsed  # a preset by its name: the processor resolves it with its own audio-separator


def url_field(value: Any, name: str) -> str:
    if value is None or value == "":
        raise bad(f"the field {name!r} is required")
    if not isinstance(value, str):
        raise bad(f"the field {name!r} must be an http(s) URL string")
    if len(value) > MAX_URL_CHARS:
        raise bad(f"the field {name!r} is longer than {MAX_URL_CHARS} characters")
    return value


def hook_url(value: Any, allow_private: bool) -> str | None:
    if value is None or value == "":
        return None
    url = url_field(value, "hook_url")
    try:
        # Checked now so a client learns at once; the uploader checks again when it calls.
        safehttp.check_url(url, allow_private)
    except safehttp.UnsafeURL as e:
        raise bad(f"hook_url is refused: {e}") from None
    return url


def priority(value: Any, form: bool) -> int:
    allowed = f"an integer from {min(PRIORITIES)} to {max(PRIORITIES)}"
    if value is None or (form and value == ""):
        return DEFAULT_PRIORITY
    if form and isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value not in PRIORITIES:
        raise bad(f"the field 'priority' must be {allowed}")
    return value


def choice(value: Any, name: str, allowed: tuple[str, ...]) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value not in allowed:
        raise bad(f"the field {name!r} must be one of: {', '.join(allowed)}")
    return value
