"""The models audio-separator knows, read from the lists its package ships (no network, no torch):
each file name with its display name, architecture, stems and median scores where it has them."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

# models.json's lists, and the architecture audio-separator runs each with.
_LISTS = {"vr_download_list": "VR", "mdx_download_list": "MDX", "mdx23c_download_list": "MDXC",
          "roformer_download_list": "MDXC", "demucs_download_list": "Demucs"}
# The display names' prefixes in models-scores.json.
_PREFIXES = (("VR Arch", "VR"), ("MDX-Net", "MDX"), ("MDX23C", "MDXC"), ("Roformer", "MDXC"), ("Demucs", "Demucs"))


@lru_cache(maxsize=1)
def known() -> dict[str, dict]:
    """File name -> {"name", "architecture", "stems", "sdr"}: audio-separator's own catalogue."""
    out: dict[str, dict] = {}
    package = resources.files("audio_separator")
    for list_name, entries in _read(package / "models.json").items():
        architecture = _LISTS.get(list_name)
        for name, files in (entries or {}).items():
            filename = next(iter(files)) if isinstance(files, dict) else files
            if isinstance(filename, str):
                out[filename] = {"name": name, "architecture": architecture, "stems": [], "sdr": {}}
    for filename, about in _read(package / "models-scores.json").items():
        entry = out.setdefault(filename, {"name": about.get("model_name", filename), "architecture": None,
                                          "stems": [], "sdr": {}})
        entry["architecture"] = entry["architecture"] or _architecture(str(about.get("model_name", "")))
        entry["stems"] = sorted(about.get("stems") or [])
        medians = about.get("median_scores") or {}
        entry["sdr"] = {stem: scores.get("SDR") for stem, scores in medians.items() if isinstance(scores, dict)}
    return out


@lru_cache(maxsize=1)
def ensemble_presets() -> dict[str, dict]:
    """audio-separator's named ensembles: id -> {"name", "description", "models", "algorithm", "weights"}."""
    presets = _read(resources.files("audio_separator") / "ensemble_presets.json").get("presets", {})
    return {key: {k: value.get(k) for k in ("name", "description", "models", "algorithm", "weights")}
            for key, value in presets.items() if isinstance(value, dict)}


def _architecture(display_name: str) -> str | None:
    return next((arch for prefix, arch in _PREFIXES if display_name.startswith(prefix)), None)


def _read(path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # an audio-separator without the list: nothing known, nothing refused
