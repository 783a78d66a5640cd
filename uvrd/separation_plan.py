"""Which models a task runs, and what becomes of their stems: one model (the default), several
(``models``: a set of stems from each), or an ensemble (``ensemble``: one set, each stem combined
from every model's by audio-separator's ``Ensembler``).

Checked by the api (a 400) and again by the processor (a clear failure): a preset or a model this
deployment does not serve is refused by the processor, which alone knows what it serves.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from uvrd import json_numbers

# audio-separator's Ensembler algorithms (audio_separator/separator/ensembler.py).
ALGORITHMS = ("avg_wave", "median_wave", "min_wave", "max_wave", "avg_fft", "median_fft", "min_fft", "max_fft",
              "uvr_max_spec", "uvr_min_spec", "ensemble_wav")
DEFAULT_ALGORITHM = "avg_wave"  # audio-separator's own default
MAX_MODELS = 8  # each model is a full separation: a task's time grows with their number
MAX_MODEL_CHARS = 200
MAX_WEIGHT = 1000.0


class PlanError(ValueError):
    """The sentence starts with the field's name in quotes and says why."""


@dataclass(frozen=True)
class Ensemble:
    models: tuple[str, ...]
    algorithm: str = DEFAULT_ALGORITHM
    weights: tuple[float, ...] | None = None
    preset: str | None = None  # the named preset it came from, if any (resolved by the processor)


@dataclass(frozen=True)
class Plan:
    """*models* in the order they run; with *ensemble*, their stems are combined into one set."""

    models: tuple[str, ...]
    ensemble: Ensemble | None = None

    @property
    def label(self) -> str:
        """What a result's ``model`` field says."""
        if self.ensemble is not None and self.ensemble.preset:
            return f"ensemble {self.ensemble.preset}"
        joined = " + ".join(self.models)
        return f"ensemble of {joined}" if self.ensemble is not None else joined

    def stem_key(self, model: str, stem: str) -> str:
        """A stem's name in the result: plain for one model or an ensemble; with several models, each
        model's stems are named ``<model>.<stem>`` (the model's file name without its extension)."""
        if len(self.models) == 1 or self.ensemble is not None:
            return stem
        return f"{model_slug(model)}.{stem}"

    def to_json(self) -> dict[str, Any]:
        """The task message's fields for it (none for a plain one-model plan)."""
        if self.ensemble is None:
            return {"models": list(self.models)} if len(self.models) > 1 else {}
        e = self.ensemble
        if e.preset is not None and not e.models:
            return {"ensemble": {"preset": e.preset}}
        return {"ensemble": {"models": list(e.models), "algorithm": e.algorithm,
                             **({"weights": list(e.weights)} if e.weights else {})}}


def model_slug(model: str) -> str:
    """A model's file name as a stem-name prefix: no extension, only letters, digits, '_' and '-'."""
    stem = model.rsplit(".", 1)[0] if "." in model else model
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:48] or "model"


def parse(models: Any, ensemble: Any) -> Plan | None:
    """The task's ``models`` and ``ensemble`` fields (JSON values, or their text in a form); None if
    it names neither (the task runs ``model``, or the default)."""
    models, ensemble = _json_text(models, "models"), _json_text(ensemble, "ensemble")
    if models is not None and ensemble is not None:
        raise PlanError("'models' and 'ensemble' exclude each other: a set of stems from each model, or one combined set")
    if models is not None:
        return Plan(_model_list(models, "models", minimum=1))
    if ensemble is not None:
        e = _ensemble(ensemble)
        return Plan(e.models, e)
    return None


def resolve(plan: Plan, presets: dict[str, dict]) -> Plan:
    """*plan* with a named preset's models, algorithm and weights filled in from *presets*
    (audio-separator's, known_models.ensemble_presets()); PlanError for an unknown preset."""
    e = plan.ensemble
    if e is None or e.preset is None or e.models:
        return plan
    preset = presets.get(e.preset)
    if preset is None:
        raise PlanError(f"'ensemble.preset' {e.preset!r} is no preset; known: {', '.join(sorted(presets))}")
    weights = tuple(float(w) for w in preset["weights"]) if preset.get("weights") else None
    resolved = Ensemble(tuple(preset["models"]), preset.get("algorithm") or DEFAULT_ALGORITHM, weights, e.preset)
    return Plan(resolved.models, resolved)


def _json_text(value: Any, name: str) -> Any:
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            return json.loads(value) if value.lstrip()[:1] in ("[", "{") else value
        except (json.JSONDecodeError, RecursionError):
            raise PlanError(f"{name!r} is not valid JSON") from None
    return value


def _model_list(value: Any, name: str, minimum: int) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]  # a form's "a.onnx,b.ckpt"
    if not isinstance(value, list) or not all(isinstance(m, str) and m.strip() for m in value):
        raise PlanError(f"{name!r} must be a list of model file names")
    if not minimum <= len(value) <= MAX_MODELS:
        raise PlanError(f"{name!r} must name {minimum} to {MAX_MODELS} models, not {len(value)}")
    if any(len(m) > MAX_MODEL_CHARS for m in value):
        raise PlanError(f"{name!r} names a model longer than {MAX_MODEL_CHARS} characters")
    if len(set(value)) != len(value):
        raise PlanError(f"{name!r} names a model twice")
    return tuple(value)


def _ensemble(value: Any) -> Ensemble:
    if isinstance(value, str):  # a form's plain "vocal_balanced": a preset
        value = {"preset": value}
    if not isinstance(value, dict):
        raise PlanError("'ensemble' must be an object: {\"preset\": NAME} or {\"models\": [...], "
                        "\"algorithm\": ..., \"weights\": [...]}")
    unknown = sorted(set(value) - {"preset", "models", "algorithm", "weights"})
    if unknown:
        raise PlanError(f"'ensemble' has no setting {unknown[0]!r}")
    preset = value.get("preset")
    if preset is not None:
        if set(value) != {"preset"}:
            raise PlanError("'ensemble.preset' sets its own models, algorithm and weights: give it alone")
        if not isinstance(preset, str) or not re.fullmatch(r"[a-z0-9_]{1,64}", preset):
            raise PlanError("'ensemble.preset' must be a preset's name, such as vocal_balanced")
        return Ensemble((), preset=preset)
    models = _model_list(value.get("models"), "ensemble.models", minimum=2)
    algorithm = value.get("algorithm", DEFAULT_ALGORITHM)
    if algorithm not in ALGORITHMS:
        raise PlanError(f"'ensemble.algorithm' must be one of {', '.join(ALGORITHMS)}")
    weights = _weights(value.get("weights"), len(models), algorithm)
    return Ensemble(models, algorithm, weights)


def _weights(value: Any, count: int, algorithm: str) -> tuple[float, ...] | None:
    """An ensemble's weights, one per model, each within bounds (json_numbers says why they are
    compared before they are converted)."""
    if value is None:
        return None
    weights = [json_numbers.number(w) for w in value] if isinstance(value, list) else []
    if len(weights) != count or any(w is None for w in weights):
        raise PlanError(f"'ensemble.weights' must be a list of {count} numbers, one per model")
    checked = [w for w in weights if w is not None]
    if not all(json_numbers.within(w, 0, MAX_WEIGHT) for w in checked) or sum(checked) <= 0:
        raise PlanError(f"'ensemble.weights' must be from 0 to {MAX_WEIGHT:g}, not all 0")
    if not algorithm.startswith("avg_"):
        raise PlanError(f"'ensemble.weights' apply to avg_wave and avg_fft only, not {algorithm}")
    return tuple(float(w) for w in checked)


def openapi_schemas() -> dict[str, dict]:
    """The OpenAPI components for the ``models`` and ``ensemble`` fields."""
    model_list = {"type": "array", "items": {"type": "string", "maxLength": MAX_MODEL_CHARS}, "uniqueItems": True}
    return {
        "Models": {**model_list, "minItems": 1, "maxItems": MAX_MODELS,
                   "description": "Models to run, each giving its own stems, named <model>.<stem> (the model's "
                                  "file name without its extension). In a form: JSON text, or names joined by commas."},
        "Ensemble": {"oneOf": [
            {"type": "object", "required": ["preset"], "additionalProperties": False,
             "properties": {"preset": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$",
                                       "description": "one of audio-separator's presets (GET /v1/models lists them)"}}},
            {"type": "object", "required": ["models"], "additionalProperties": False,
             "properties": {"models": {**model_list, "minItems": 2, "maxItems": MAX_MODELS},
                            "algorithm": {"type": "string", "enum": list(ALGORITHMS), "default": DEFAULT_ALGORITHM},
                            "weights": {"type": "array", "items": {"type": "number", "minimum": 0,
                                                                   "maximum": MAX_WEIGHT},
                                        "description": "one per model; avg_wave and avg_fft only"}}}],
            "description": "One set of stems, each combined from every model's by audio-separator's ensembler. "
                           "In a form: JSON text, or a preset's name."},
    }
