"""``uvrd models list`` and ``uvrd models pull NAME…``: the models audio-separator knows, and
fetching them into ``processor.model_dir`` ahead of time, so that a processor's first start (or a
task naming an extra model) does not wait for a download.

``list`` reads audio-separator's own catalogue (shipped in its package: it needs no network) and
marks the models this configuration serves (``*``) and those already in ``model_dir``.  ``pull``
downloads through audio-separator, with its progress bar; a host that cannot reach the model
hosts gets one line saying so.  Exit status: 0, or 2 when a model is unknown or was not fetched.
"""

from __future__ import annotations

import json
import logging
import sys

from uvrd import known_models
from uvrd.cli.startup import add_config_argument, load_config


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="the models audio-separator knows, marking those served and present")
    listing.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    listing.add_argument("--architecture", choices=("MDX", "VR", "Demucs", "MDXC"), help="only these")
    add_config_argument(listing)
    pull = sub.add_parser("pull", help="download models into processor.model_dir")
    pull.add_argument("model", nargs="+", help="model file names, as `uvrd models list` shows them")
    add_config_argument(pull)


def run(args) -> int:
    config = load_config(args)
    return _list(args, config) if args.action == "list" else _pull(args, config)


def _list(args, config) -> int:
    cfg = config.processor
    catalogue = dict(known_models.known())
    for served in cfg.models:  # a served model audio-separator does not list is still this deployment's
        catalogue.setdefault(served, {"name": served, "architecture": None, "stems": [], "sdr": {}})
    rows = []
    for filename, about in sorted(catalogue.items(), key=lambda kv: (kv[1]["architecture"] or "~", kv[0].lower())):
        if args.architecture and about["architecture"] != args.architecture:
            continue
        rows.append({"model": filename, **about, "served": filename in cfg.models,
                     "present": (cfg.model_dir / filename).is_file()})
    if args.json:
        print(json.dumps({"model_dir": str(cfg.model_dir), "models": rows}))
        return 0
    print(f"{'':2}{'model':<60} {'arch':<7} {'stems':<28} here")
    for row in rows:
        stems = ", ".join(row["stems"])[:28]
        print(f"{'*' if row['served'] else ' '} {row['model']:<60} {row['architecture'] or '?':<7} {stems:<28} "
              f"{'yes' if row['present'] else ''}")
    print(f"\n{len(rows)} models; * served by this configuration; 'here': in {cfg.model_dir}")
    return 0


def _pull(args, config) -> int:
    cfg = config.processor
    catalogue = known_models.known()
    unknown = [m for m in args.model if m not in catalogue]
    if unknown:
        print(f"uvrd models pull: unknown model {unknown[0]!r}; `uvrd models list` shows the known ones",
              file=sys.stderr)
        return 2
    cfg.model_dir.mkdir(parents=True, exist_ok=True)
    from audio_separator.separator import Separator  # torch: only for a pull

    separator = Separator(log_level=logging.WARNING, model_file_dir=str(cfg.model_dir), info_only=True)
    failed = 0
    for model in args.model:
        try:
            separator.download_model_and_data(model)
        except Exception as e:  # audio-separator raises whatever requests or the file system raised
            why = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            print(f"uvrd models pull: {model} was not fetched: {type(e).__name__}: {why} "
                  "(audio-separator downloads from GitHub and Hugging Face: is this host online?)", file=sys.stderr)
            failed += 1
            continue
        print(f"{model}: in {cfg.model_dir}", flush=True)
    return 2 if failed else 0
