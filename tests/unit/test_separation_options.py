"""A task's separation options: every bound refused with a sentence naming the option, from a form's
JSON text or a message's object alike, and the OpenAPI schema built from the same table."""

from __future__ import annotations

import json

import pytest

from uvrd.separation_options import NO_OPTIONS, SCHEMA, OptionError, openapi_schema, parse


def test_no_options_is_the_deployments_settings():
    assert parse(None) is NO_OPTIONS and parse("") is NO_OPTIONS and parse({}) is NO_OPTIONS
    assert NO_OPTIONS.for_architecture("MDX") == {}


def test_options_in_bounds_are_kept_typed_from_json_text_or_an_object():
    given = {"mdx_overlap": 0.5, "mdx_batch_size": 2, "single_stem": "Vocals", "stem_names": {"vocals": "voice"},
             "sample_rate": 22050, "bit_depth": 24, "normalization_threshold": 0.5}
    options = parse(json.dumps(given))
    assert options == parse(given)
    assert options.as_dict() == {**given, "single_stem": "vocals"}
    assert options.for_architecture("MDX") == {"overlap": 0.5, "batch_size": 2, "normalization_threshold": 0.5}


@pytest.mark.parametrize("given, words", [
    ({"mdx_overlap": 1.5}, "mdx_overlap must be from 0.001 to 0.999, not 1.5"),
    ({"mdx_overlap": float("nan")}, "mdx_overlap must be a number"),
    ({"mdx_batch_size": float("nan")}, "mdx_batch_size must be an integer"),
    ({"mdx_batch_size": float("inf")}, "mdx_batch_size must be an integer"),
    ({"mdx_overlap": float("inf")}, "mdx_overlap must be from 0.001 to 0.999, not inf"),
    ({"sample_rate": 10 ** 400}, "sample_rate must be from 8000 to 192000, not a number of 401 digits"),
    ({"mdx_batch_size": 2.5}, "mdx_batch_size must be an integer"),
    ({"mdx_batch_size": True}, "mdx_batch_size must be an integer"),
    ({"vr_aggression": -101}, "vr_aggression must be from -100 to 100"),
    ({"vr_window_size": 400}, "vr_window_size must be one of 320, 512, 1024, not 400"),
    ({"demucs_shifts": 21}, "demucs_shifts must be from 0 to 20"),
    ({"mdxc_overlap": 1}, "mdxc_overlap must be from 2 to 50"),
    ({"vr_enable_tta": "yes"}, "vr_enable_tta must be true or false"),
    ({"sample_rate": 1000}, "sample_rate must be from 8000 to 192000"),
    ({"bit_depth": 8}, "bit_depth must be one of 16, 24, 32"),
    ({"stem_names": {"vocals": "../x"}}, "the name for vocals must be 1-64 letters"),
    ({"stem_names": {"vocals": "a", "instrumental": "a"}}, "gives two stems the same name"),
    ({"single_stem": "vocals", "stem_names": {"drums": "d"}}, "may only name the single_stem"),
    ({"turbo": True}, "unknown option 'turbo'"),
    ("[1, 2]", "options must be a JSON object"),
    ("{not json", "options must be a JSON object"),
    ("x" * 9000, "options are over 8192 bytes"),
])
def test_an_option_out_of_bounds_is_refused_by_name(given, words):
    with pytest.raises(OptionError) as e:
        parse(given)
    assert words in str(e.value)


def test_an_option_for_another_architecture_or_format_is_refused_when_they_are_known():
    options = parse({"vr_aggression": 10})
    assert options.for_architecture("VR") == {"aggression": 10}
    with pytest.raises(OptionError, match="vr_aggression is for VR models; this task's model is a MDX model"):
        options.for_architecture("MDX")
    with pytest.raises(OptionError, match="bit_depth needs a lossless output_format"):
        parse({"bit_depth": 24}).check_format("mp3")
    with pytest.raises(OptionError, match="does not fit flac"):
        parse({"bit_depth": 32}).check_format("flac")
    parse({"bit_depth": 24}).check_format("flac")


def test_the_openapi_schema_states_every_bound_the_checks_enforce():
    schema = openapi_schema()
    assert set(schema["properties"]) == set(SCHEMA) and schema["additionalProperties"] is False
    assert schema["properties"]["mdx_overlap"] | {} == {"type": "number", "minimum": 0.001, "maximum": 0.999,
                                                       "description": schema["properties"]["mdx_overlap"]["description"]}
    assert schema["properties"]["vr_window_size"]["enum"] == [320, 512, 1024]


# Python's json reads NaN, Infinity and 1e309 (as inf) and integers of any length: each is a value a
# client can send, in a JSON body or the options field's text, and each is a 400 naming the option.
HOSTILE_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "9" * 401, "-" + "9" * 401]
NUMERIC_OPTIONS = [name for name, bound in SCHEMA.items() if bound.kind in (int, float)]


@pytest.mark.parametrize("literal", HOSTILE_NUMBERS)
@pytest.mark.parametrize("name", NUMERIC_OPTIONS)
def test_a_number_no_bound_can_hold_is_refused_by_name_from_text_or_an_object(name, literal):
    text = f'{{"{name}": {literal}}}'
    for given in (text, json.loads(text)):
        with pytest.raises(OptionError) as e:
            parse(given)
        assert f"option {name} must be" in str(e.value)
        assert len(str(e.value)) < 200  # a sentence, not the 401 digits back
