"""A submission's fields as the api reads them (uvrd/api/submit.py, uvrd/api/fields.py), in process:
a JSON body or a form's text, and the 400 that names what is wrong."""

from __future__ import annotations

import json

import pytest
from flask import Flask

from uvrd.api import fields, submit
from uvrd.api.errors import ApiError

MODELS = ("UVR-MDX-NET-Inst_1.onnx", "Other.onnx")
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "9" * 401]


def refusal(values, form: bool) -> str:
    """The 400's sentence for a submission of *values*."""
    with pytest.raises(ApiError) as e:
        fields.parse(values, MODELS, allow_private=False, form=form, default_format="flac")
    assert e.value.status == 400
    return e.value.message


def json_body(text: str) -> dict:
    """The body as the api parses a JSON request."""
    with Flask(__name__).test_request_context("/v1/tasks", method="POST", data=text,
                                             content_type="application/json"):
        return submit.json_object()


@pytest.mark.parametrize("literal", HOSTILE_NUMBERS)
@pytest.mark.parametrize("name", ["mdx_overlap", "mdx_batch_size", "vr_window_size", "sample_rate"])
def test_a_number_no_option_can_hold_is_a_400_naming_it_in_a_json_body_or_a_form(name, literal):
    body = json_body(f'{{"audio": "https://93.184.215.14/a.wav", "options": {{"{name}": {literal}}}}}')
    assert f"the field 'options' is refused: option {name} must be" in refusal(body, form=False)
    form = {"options": f'{{"{name}": {literal}}}'}
    assert f"the field 'options' is refused: option {name} must be" in refusal(form, form=True)


@pytest.mark.parametrize("literal", HOSTILE_NUMBERS)
def test_an_ensemble_weight_no_bound_can_hold_is_a_400_naming_it(literal):
    ensemble = f'{{"models": ["{MODELS[0]}", "{MODELS[1]}"], "weights": [1, {literal}]}}'
    body = json_body(f'{{"audio": "https://93.184.215.14/a.wav", "ensemble": {ensemble}}}')
    assert "the field 'ensemble.weights' must be" in refusal(body, form=False)
    assert "the field 'ensemble.weights' must be" in refusal({"ensemble": ensemble}, form=True)


def test_options_in_bounds_pass_from_either():
    options = {"mdx_overlap": 0.5, "sample_rate": 22050}
    body = json_body(json.dumps({"audio": "https://93.184.215.14/a.wav", "options": options}))
    for values, form in ((body, False), ({"options": json.dumps(options)}, True)):
        parsed = fields.parse(values, MODELS, allow_private=False, form=form, default_format="flac")
        assert parsed.options.as_dict() == options


def stems_reported(**by_model: tuple[str, ...]):
    """The stems each model's workers report in their heartbeats (None: no worker has said yet)."""
    return lambda model: by_model.get(model)


def submitted(**values) -> fields.Submission:
    return fields.parse(values, MODELS, allow_private=False, form=True, default_format="flac")


def test_a_custom_name_another_stem_keeps_is_a_400_where_the_models_stems_are_known():
    renamed = submitted(options=json.dumps({"stem_names": {"vocals": "instrumental"}}))
    known = stems_reported(**{MODELS[0]: ("instrumental", "vocals")})
    with pytest.raises(ApiError) as e:
        fields.check_stem_names(renamed, MODELS[0], known)
    assert e.value.status == 400
    assert e.value.message == ("the field 'options' is refused: option stem_names would give the vocals and "
                               "instrumental stems one name, 'instrumental': rename instrumental too "
                               "(names may be swapped)")
    # Several models: each model's stems are named apart, so each is checked.
    several = submitted(models=json.dumps(list(MODELS)), options=json.dumps({"stem_names": {"vocals": "instrumental"}}))
    with pytest.raises(ApiError):
        fields.check_stem_names(several, MODELS[0], known)


def test_a_swap_or_stems_not_known_yet_pass_to_the_processor():
    known = stems_reported(**{MODELS[0]: ("instrumental", "vocals")})
    swap = submitted(options=json.dumps({"stem_names": {"vocals": "instrumental", "instrumental": "vocals"}}))
    fields.check_stem_names(swap, MODELS[0], known)
    clash = submitted(model=MODELS[1], options=json.dumps({"stem_names": {"vocals": "instrumental"}}))
    fields.check_stem_names(clash, MODELS[0], known)  # Other.onnx's stems: the processor checks them
