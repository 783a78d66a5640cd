"""A task's separation options: one bounded schema, checked by the api (a 400) and again by the
processor (a clear failure), and the OpenAPI document's description of them.

The architecture settings are those audio-separator reads while it separates (not those baked in
when a model loads, such as MDX's segment size, which stay the deployment's ``[processor]``
settings), named as its own CLI names them.  An option for another architecture than the task's
model is the processor's to refuse, since only it knows the model's architecture.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from uvrd import json_numbers

# The output formats that can hold each bit depth (lossy codecs have none to choose).
LOSSLESS_FORMATS = ("wav", "flac", "aiff")
STEM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# audio-separator's stem names, as uvrd's results carry them (lower case, "_" for a space).
STEM_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_OPTIONS_BYTES = 8192


class OptionError(ValueError):
    """An option out of its bounds, unknown, or of the wrong type: the sentence says which."""


@dataclass(frozen=True)
class Bound:
    """One option: its type, its bounds (or its choices), and the architecture it applies to."""

    kind: type
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    architecture: str | None = None  # "MDX", "VR", "Demucs" or "MDXC"; None: any model
    attribute: str = ""  # the separator's attribute it sets
    description: str = ""


SCHEMA: dict[str, Bound] = {
    "mdx_overlap": Bound(float, 0.001, 0.999, architecture="MDX", attribute="overlap",
                         description="share of each window that overlaps the next"),
    "mdx_batch_size": Bound(int, 1, 16, architecture="MDX", attribute="batch_size",
                            description="windows run at once (memory, not quality)"),
    "mdx_enable_denoise": Bound(bool, architecture="MDX", attribute="enable_denoise",
                                description="run the model twice to cancel its noise"),
    "vr_aggression": Bound(int, -100, 100, architecture="VR", attribute="aggression",
                           description="how hard the primary stem is pulled out"),
    "vr_window_size": Bound(int, choices=(320, 512, 1024), architecture="VR", attribute="window_size",
                            description="smaller: better quality, slower"),
    "vr_batch_size": Bound(int, 1, 16, architecture="VR", attribute="batch_size"),
    "vr_enable_tta": Bound(bool, architecture="VR", attribute="enable_tta",
                           description="test-time augmentation: better quality, twice as slow"),
    "vr_enable_post_process": Bound(bool, architecture="VR", attribute="enable_post_process",
                                    description="remove the instrumental's artefacts from the vocals"),
    "vr_post_process_threshold": Bound(float, 0.1, 0.3, architecture="VR", attribute="post_process_threshold"),
    "vr_high_end_process": Bound(bool, architecture="VR", attribute="high_end_process",
                                 description="mirror the missing high frequencies"),
    "demucs_shifts": Bound(int, 0, 20, architecture="Demucs", attribute="shifts",
                           description="random shifts averaged: better quality, slower"),
    "demucs_overlap": Bound(float, 0.001, 0.999, architecture="Demucs", attribute="overlap"),
    "demucs_segments_enabled": Bound(bool, architecture="Demucs", attribute="segments_enabled"),
    "mdxc_overlap": Bound(int, 2, 50, architecture="MDXC", attribute="overlap",
                          description="windows overlapping each point of the audio"),
    "mdxc_batch_size": Bound(int, 1, 16, architecture="MDXC", attribute="batch_size"),
    "mdxc_pitch_shift": Bound(int, -24, 24, architecture="MDXC", attribute="pitch_shift",
                              description="semitones the audio is shifted by while it is separated"),
    "normalization_threshold": Bound(float, 0.1, 1.0, attribute="normalization_threshold",
                                     description="a stem's peak is lowered to this"),
    "amplification_threshold": Bound(float, 0.0, 1.0, attribute="amplification_threshold",
                                     description="a stem whose peak is below this is raised to it"),
    "single_stem": Bound(str, description="write only this stem (vocals, instrumental, drums, ...)"),
    "stem_names": Bound(dict, description="custom file and result names: {stem: name}; names may be swapped, "
                                          "but a name another stem keeps is refused"),
    "sample_rate": Bound(int, 8000, 192000, description="the stems' sample rate in Hz"),
    "bit_depth": Bound(int, choices=(16, 24, 32), description="the stems' bit depth (wav, flac, aiff)"),
}
ARCHITECTURES = ("MDX", "VR", "Demucs", "MDXC")


@dataclass(frozen=True)
class SeparationOptions:
    """The options a task set, checked: ``values`` holds only those it gave."""

    values: tuple[tuple[str, Any], ...] = ()

    def get(self, name: str, default: Any = None) -> Any:
        return dict(self.values).get(name, default)

    def as_dict(self) -> dict[str, Any]:
        return {name: dict(value) if isinstance(value, tuple) else value for name, value in self.values}

    def for_architecture(self, architecture: str, several: bool = False) -> dict[str, Any]:
        """The separator attributes to set for a model of *architecture*; OptionError for an option
        of another architecture, unless the model is one of *several* (check_architectures then
        says whether each option fitted one of them)."""
        out = {}
        for name, value in self.values:
            bound = SCHEMA[name]
            if bound.architecture is None:
                if bound.attribute:
                    out[bound.attribute] = value
                continue
            if bound.architecture != architecture:
                if several:
                    continue
                raise OptionError(f"option {name} is for {bound.architecture} models; this task's model is "
                                  f"a {architecture} model")
            out[bound.attribute] = value
        return out

    def check_architectures(self, architectures: set[str]) -> None:
        """OptionError for an option that fits none of a task's models' *architectures*."""
        for name, _ in self.values:
            wanted = SCHEMA[name].architecture
            if wanted is not None and wanted not in architectures:
                raise OptionError(f"option {name} is for {wanted} models; this task's models are "
                                  f"{', '.join(sorted(architectures))} models")

    def final_names(self, stems: Iterable[str]) -> dict[str, str]:
        """Each of a model's *stems* under the name it ends with: its custom name, else its own.
        OptionError where two would end with one name (a stem renamed to a name another keeps);
        names may be swapped or passed round, since every stem still ends with one of its own."""
        names = dict(self.get("stem_names") or ())
        final = {stem: names.get(stem, stem) for stem in stems}
        holder: dict[str, str] = {}
        for stem, name in sorted(final.items(), key=lambda item: item[0] in names):
            if name in holder:
                kept, renamed = holder[name], stem
                raise OptionError(f"option stem_names would give the {renamed} and {kept} stems one name, "
                                  f"{name!r}: rename {kept} too (names may be swapped)")
            holder[name] = stem
        return final

    def check_format(self, output_format: str) -> None:
        depth = self.get("bit_depth")
        if depth is not None and output_format not in LOSSLESS_FORMATS:
            raise OptionError(f"option bit_depth needs a lossless output_format ({', '.join(LOSSLESS_FORMATS)}), "
                              f"not {output_format}")
        if depth == 32 and output_format == "flac":
            raise OptionError("option bit_depth 32 does not fit flac, which holds 16 or 24 bits")


NO_OPTIONS = SeparationOptions()


def parse(raw: Any) -> SeparationOptions:
    """*raw*: a JSON object (or its text, from a form).  OptionError names the first bad option."""
    if raw is None or raw == "" or raw == {}:
        return NO_OPTIONS
    if isinstance(raw, str):
        if len(raw.encode("utf-8", "replace")) > MAX_OPTIONS_BYTES:
            raise OptionError(f"options are over {MAX_OPTIONS_BYTES} bytes")
        try:
            raw = json.loads(raw)
        except (ValueError, RecursionError):
            raise OptionError("options must be a JSON object") from None
    if not isinstance(raw, dict):
        raise OptionError("options must be a JSON object")
    values = []
    for name in sorted(raw):
        if name not in SCHEMA:
            raise OptionError(f"unknown option {str(name)[:64]!r}; known: {', '.join(SCHEMA)}")
        values.append((name, _value(name, SCHEMA[name], raw[name])))
    options = SeparationOptions(tuple(values))
    single, names = options.get("single_stem"), dict(options.get("stem_names") or ())
    if single is not None and names and set(names) != {single}:
        raise OptionError("option stem_names may only name the single_stem when single_stem is set")
    return options


def _value(name: str, bound: Bound, value: Any) -> Any:
    if bound.kind is bool:
        if not isinstance(value, bool):
            raise OptionError(f"option {name} must be true or false")
        return value
    if bound.kind in (int, float):
        return _number(name, bound, value)
    if bound.kind is str:  # single_stem
        if not isinstance(value, str) or not STEM_RE.fullmatch(value.lower().replace(" ", "_")):
            raise OptionError(f"option {name} must be a stem name such as vocals or instrumental")
        return value.lower().replace(" ", "_")
    # stem_names
    if not isinstance(value, dict) or not value or len(value) > 16:
        raise OptionError(f"option {name} must be an object of 1-16 stem: name pairs")
    out = {}
    for stem, new in value.items():
        if not STEM_RE.fullmatch(str(stem).lower().replace(" ", "_")):
            raise OptionError(f"option {name}: {str(stem)[:40]!r} is no stem name")
        if not isinstance(new, str) or not STEM_NAME_RE.fullmatch(new):
            raise OptionError(f"option {name}: the name for {stem} must be 1-64 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit")
        out[str(stem).lower().replace(" ", "_")] = new
    if len(set(out.values())) != len(out):
        raise OptionError(f"option {name} gives two stems the same name")
    return tuple(sorted(out.items()))


def _number(name: str, bound: Bound, value: Any) -> int | float:
    """*value* of a numeric option, within its choices or bounds (json_numbers says why it is
    compared before it is converted)."""
    found = json_numbers.whole(value) if bound.kind is int else json_numbers.number(value)
    if found is None:
        raise OptionError(f"option {name} must be {'an integer' if bound.kind is int else 'a number'}")
    if bound.choices and found not in bound.choices:
        raise OptionError(f"option {name} must be one of {', '.join(map(str, bound.choices))}, "
                          f"not {json_numbers.shown(found)}")
    if bound.low is not None and bound.high is not None and not json_numbers.within(found, bound.low, bound.high):
        raise OptionError(f"option {name} must be from {bound.low:g} to {bound.high:g}, "
                          f"not {json_numbers.shown(found)}")
    return bound.kind(found)  # within its bounds: float() cannot overflow


def openapi_schema() -> dict:
    """The options object as JSON Schema, from the same table that checks them."""
    props = {}
    for name, bound in SCHEMA.items():
        if bound.kind is dict:
            prop = {"type": "object", "maxProperties": 16,
                    "additionalProperties": {"type": "string", "pattern": f"^{STEM_NAME_RE.pattern}$"}}
        elif bound.kind is str:
            prop = {"type": "string", "pattern": f"^{STEM_RE.pattern}$"}
        else:
            prop = {"type": {bool: "boolean", int: "integer", float: "number"}[bound.kind]}
            if bound.choices:
                prop["enum"] = list(bound.choices)
            elif bound.low is not None:
                prop["minimum"], prop["maximum"] = bound.low, bound.high
        text = bound.description
        if bound.architecture:
            text = f"{bound.architecture} models only" + (f": {text}" if text else "")
        if text:
            prop["description"] = text
        props[name] = prop
    return {"type": "object", "additionalProperties": False, "properties": props,
            "description": "Separation options; each is checked against its bounds (400 when out of them)."}
