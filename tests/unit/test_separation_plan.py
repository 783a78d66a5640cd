"""A task's models and ensemble (uvrd/separation_plan.py): what is accepted, what is refused with
which sentence, and how stems are named."""

from __future__ import annotations

import json

import pytest

from uvrd import known_models
from uvrd.processor.ensemble import stem_groups
from uvrd.separation_plan import Ensemble, Plan, PlanError, parse, resolve


def test_neither_field_is_the_plain_one_model_task():
    assert parse(None, None) is None and parse("", " ") is None


def test_models_from_json_or_a_forms_commas_each_named_for_its_model():
    plan = parse('["a.onnx", "b.ckpt"]', None)
    assert plan == parse("a.onnx, b.ckpt", None) == parse(["a.onnx", "b.ckpt"], None)
    assert plan.label == "a.onnx + b.ckpt"
    assert (plan.stem_key("a.onnx", "vocals"), plan.stem_key("htdemucs_6s.yaml", "drums")) == \
        ("a.vocals", "htdemucs_6s.drums")
    assert Plan(("a.onnx",)).stem_key("a.onnx", "vocals") == "vocals"
    assert json.loads(json.dumps(plan.to_json())) == {"models": ["a.onnx", "b.ckpt"]}


def test_an_ensemble_keeps_plain_stem_names_and_round_trips_through_a_task_message():
    plan = parse(None, {"models": ["a.onnx", "b.ckpt"], "algorithm": "avg_fft", "weights": [1, 2.5]})
    assert plan.ensemble == Ensemble(("a.onnx", "b.ckpt"), "avg_fft", (1.0, 2.5))
    assert plan.stem_key("a.onnx", "vocals") == "vocals"
    assert parse(None, plan.to_json()["ensemble"]) == plan
    assert plan.label == "ensemble of a.onnx + b.ckpt"


def test_a_preset_is_resolved_from_audio_separators_own_list():
    plan = parse(None, "vocal_balanced")
    assert plan.to_json() == {"ensemble": {"preset": "vocal_balanced"}}
    resolved = resolve(plan, known_models.ensemble_presets())
    preset = known_models.ensemble_presets()["vocal_balanced"]
    assert resolved.models == tuple(preset["models"]) and resolved.ensemble.algorithm == preset["algorithm"]
    assert resolved.label == "ensemble vocal_balanced"
    with pytest.raises(PlanError, match="'no_such' is no preset; known: instrumental_balanced"):
        resolve(parse(None, {"preset": "no_such"}), known_models.ensemble_presets())


@pytest.mark.parametrize("models,ensemble,error", [
    (["a"], {"preset": "karaoke"}, "'models' and 'ensemble' exclude each other"),
    ([], None, "'models' must name 1 to 8 models, not 0"),
    ([f"m{i}" for i in range(9)], None, "must name 1 to 8 models, not 9"),
    (["a", "a"], None, "'models' names a model twice"),
    ([1, 2], None, "'models' must be a list of model file names"),
    ("[not json", None, "'models' is not valid JSON"),
    (None, {"models": ["a"]}, "'ensemble.models' must name 2 to 8 models, not 1"),
    (None, {"models": ["a", "b"], "algorithm": "loudest"}, "'ensemble.algorithm' must be one of avg_wave"),
    (None, {"models": ["a", "b"], "weights": [1]}, "must be a list of 2 numbers"),
    (None, {"models": ["a", "b"], "weights": [0, 0]}, "not all 0"),
    (None, {"models": ["a", "b"], "weights": [1, float("inf")]}, "must be from 0 to 1000"),
    (None, {"models": ["a", "b"], "weights": [1, True]}, "must be a list of 2 numbers"),
    (None, {"models": ["a", "b"], "algorithm": "median_wave", "weights": [1, 2]}, "apply to avg_wave and avg_fft"),
    (None, {"preset": "karaoke", "algorithm": "avg_wave"}, "give it alone"),
    (None, {"preset": "../x"}, "must be a preset's name"),
    (None, {"models": ["a", "b"], "extra": 1}, "'ensemble' has no setting 'extra'"),
    (None, 42, "'ensemble' must be an object"),
])
def test_what_cannot_run_is_refused_with_a_sentence_naming_the_field(models, ensemble, error):
    with pytest.raises(PlanError, match=error.replace("(", r"\(")):
        parse(models, ensemble)


def test_stems_are_grouped_by_name_as_audio_separator_groups_them():
    groups = stem_groups([{"vocals": "a/v", "instrumental": "a/i"},
                          {"vocals": "b/v", "other": "b/o"},  # a vocal model's "other": the instrumental
                          {"drums": "c/d", "bass": "c/b", "other": "c/o", "vocals": "c/v"},
                          {"no_vocals": "d/n", "lead_vocals": "d/l"}])
    assert groups == {"vocals": ["a/v", "b/v", "c/v"], "instrumental": ["a/i", "b/o", "d/n"],
                      "drums": ["c/d"], "bass": ["c/b"], "other": ["c/o"], "lead_vocals": ["d/l"]}


@pytest.mark.parametrize("weight", ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "9" * 401, "-" + "9" * 401])
def test_an_ensemble_weight_no_bound_can_hold_is_refused_by_name_from_text_or_an_object(weight):
    text = f'{{"models": ["a.onnx", "b.ckpt"], "weights": [1, {weight}]}}'
    for given in (text, json.loads(text)):
        with pytest.raises(PlanError, match=r"'ensemble\.weights' must be") as e:
            parse(None, given)
        assert len(str(e.value)) < 200
