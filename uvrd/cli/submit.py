"""``uvrd submit FILE…``: upload each file to the API as its own task; with ``--wait``, follow
them to their end; with ``--output DIR``, also download their stems there.  With several files, a
summary ends the output.

The API address and token come from the options, then UVRD_API_URL /
UVRD_API_TOKEN, then the configuration (api.public_url, the first of
api.tokens).  Exit status, the worst over the files: 0 when the task
succeeded (and, with --output, every stem arrived whole), 1 when it failed or
was cancelled, 2 on a refused submission, an unreachable API or an output
directory that cannot be written, 3 when a stem could not be downloaded.
While a task runs, --wait draws its progress: a bar on a terminal, a line per
tenth otherwise.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import time
from pathlib import Path

from uvrd.cli import arguments
from uvrd.cli.endpoint import add_endpoint_arguments, client
from uvrd.client.api_client import ApiClient, Refused, Unreachable
from uvrd.client.stem_download import DownloadError, download
from uvrd.config import PRIORITIES

FINAL_OK = ("succeeded", "delivered")
FINAL_BAD = ("failed", "cancelled", "delivery_failed")
BAR_WIDTH = 30


class SubmitError(Exception):
    pass


def add_arguments(parser) -> None:
    parser.add_argument("file", type=Path, nargs="+", help="the audio file(s) to separate: each is its own task")
    parser.add_argument("--hook-url", help="webhook to call with the result")
    parser.add_argument("--wait", action="store_true", help="follow the task until it ends")
    parser.add_argument("--output", type=Path, metavar="DIR",
                        help="wait, then download each stem into DIR as <file>_<stem>.<ext>")
    parser.add_argument("--priority", type=arguments.whole(min(PRIORITIES), max(PRIORITIES)),
                        help="1 (lowest) to 5 (highest); default 3")
    parser.add_argument("--model", action="append", metavar="MODEL",
                        help="a model this deployment serves; given more than once, each model's stems come back, "
                             "named <model>.<stem>")
    parser.add_argument("--ensemble", metavar="PRESET|JSON",
                        help='one combined set of stems: a preset\'s name, or JSON such as '
                             '\'{"models": ["a.onnx", "b.ckpt"], "algorithm": "avg_wave"}\'')
    parser.add_argument("--output-format", help="flac, wav, mp3, ...")
    parser.add_argument("--option", action="append", metavar="NAME=VALUE",
                        help="a separation option, such as single_stem=vocals or mdx_overlap=0.5 (repeatable)")
    parser.add_argument("--timeout", type=arguments.seconds, default=3600, help="seconds --wait waits at most")
    add_endpoint_arguments(parser)


def task_form(hook_url: str | None = None, **fields) -> dict[str, str]:
    """The upload's form fields, those given."""
    return {k: str(v) for k, v in {"hook_url": hook_url, **fields}.items() if v is not None}


def _models(args) -> dict[str, str | None]:
    """The form's model fields for --model (once or more) and --ensemble."""
    models = args.model or []
    if len(models) > 1:
        return {"models": json.dumps(models), "ensemble": args.ensemble}
    return {"model": models[0] if models else None, "ensemble": args.ensemble}


def status(api: ApiClient, task_uuid: str) -> dict:
    """The task's status; a task the api does not know yet is queued (its status topic lags)."""
    return api.task(task_uuid) or {"task_uuid": task_uuid, "state": "queued"}


def follow(api: ApiClient, task_uuid: str, timeout: float, out=sys.stdout) -> dict:
    """Print each state change with the elapsed time, and the progress while it runs, until the task
    ends; return its last status."""
    started = time.monotonic()
    last = None
    bar = ProgressBar(out)
    while True:
        current = status(api, task_uuid)
        if current.get("state") != last:
            bar.close()
            last = current.get("state")
            print(f"{time.monotonic() - started:7.1f} s  {last}", file=out, flush=True)
        if last == "processing" and isinstance(current.get("progress"), (int, float)):
            bar.show(float(current["progress"]), str(current.get("step") or ""))
        if last in FINAL_OK + FINAL_BAD:
            bar.close()
            return current
        if time.monotonic() - started > timeout:
            raise SubmitError(f"task {task_uuid} did not end within {timeout:g} s (last state: {last})")
        time.sleep(1.0)


class ProgressBar:
    """A task's progress: redrawn in place on a terminal; elsewhere (a log, a pipe) one line each
    time it passes a tenth, so that the output stays readable."""

    def __init__(self, out):
        self.out = out
        self.tty = out.isatty() if hasattr(out, "isatty") else False
        self.shown = -1.0
        self.drawn = False

    def show(self, fraction: float, step: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        if self.tty:
            filled = round(fraction * BAR_WIDTH)
            print(f"\r          [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {fraction:4.0%}  {step[:40]:<40}",
                  end="", file=self.out, flush=True)
            self.drawn = True
        elif int(fraction * 10) > int(self.shown * 10) or self.shown < 0:
            print(f"          {fraction:4.0%}  {step}".rstrip(), file=self.out, flush=True)
        self.shown = fraction

    def close(self) -> None:
        if self.drawn:
            print(file=self.out, flush=True)
            self.drawn = False


def run(args) -> int:
    api = client(args)
    try:
        options = _options(args.option)
        if args.output is not None:
            _writable(args.output)  # before the task exists: its stems must have somewhere to go
    except (SubmitError, OSError) as e:
        print(f"uvrd submit: {e}", file=sys.stderr)
        return 2
    codes: list[int] = []
    ends: list[tuple[str, str]] = []  # each file's outcome and its summary line
    accepted: list[tuple[Path, str]] = []
    for path in args.file:  # each file is its own task
        try:
            task = api.submit(path, task_form(args.hook_url, priority=args.priority, **_models(args),
                                              output_format=args.output_format, options=options))
        except (Refused, Unreachable, OSError) as e:
            print(f"uvrd submit: {path}: {e}", file=sys.stderr)
            codes.append(2)
            ends.append(("not accepted", f"  {path.name:<24} not accepted: {e}"))
            continue
        print(f"task {task['task_uuid']} accepted: {task['status_url']}", flush=True)
        accepted.append((path, task["task_uuid"]))
    deadline = time.monotonic() + args.timeout
    for path, task_uuid in accepted:
        if not (args.wait or args.output is not None):
            ends.append(("submitted", f"  {path.name:<24} {task_uuid}  submitted"))
            continue
        if len(args.file) > 1:
            print(f"{path.name}:", flush=True)
        code, outcome, detail = _wait_for(api, path, task_uuid, max(deadline - time.monotonic(), 0),
                                          args.output)
        codes.append(code)
        ends.append((outcome, f"  {path.name:<24} {task_uuid}  {detail}"))
    if len(args.file) > 1:
        tally = collections.Counter(outcome for outcome, _ in ends)
        print(f"{len(args.file)} files: " + ", ".join(f"{n} {what}" for what, n in sorted(tally.items())))
        print("\n".join(line for _, line in ends))
    return max(codes, default=0)


def _wait_for(api: ApiClient, path: Path, task_uuid: str, timeout: float,
              output: Path | None) -> tuple[int, str, str]:
    """Follow one task to its end (and download its stems into *output*): its exit status, its
    outcome and a summary."""
    try:
        final = follow(api, task_uuid, timeout)
    except (SubmitError, Refused, Unreachable) as e:
        print(f"uvrd submit: {e}", file=sys.stderr)
        return 2, "not followed", f"not followed: {e}"
    # "delivered" says only that the webhook went out; "outcome" says how the work ended.
    outcome = final.get("outcome") or final["state"]
    if outcome == "cancelled":
        print(f"task cancelled (asked at {final.get('cancel_requested_at') or 'an unknown time'})")
        return 1, "cancelled", "cancelled"
    if outcome == "failed" or final["state"] in FINAL_BAD:
        why = final.get("error_message") or final.get("delivery_error") or "no reason given"
        print(f"task failed: {why}")
        return 1, "failed", f"failed: {why}"
    stems = sorted((final.get("stems") or {}).items())
    if output is None:
        for stem, url in stems:
            print(f"  {stem:<13} {url}")
        return 0, "succeeded", "succeeded"
    code = _download_all(api, path, stems, output)
    return code, "succeeded", "succeeded" if code == 0 else "succeeded; stems not all downloaded"


def _options(given: list[str] | None) -> str | None:
    """``--option NAME=VALUE`` pairs as the JSON text of the form's ``options`` field; each VALUE is
    read as JSON (a number, true, an object), else kept as a string.  The API checks the bounds."""
    if not given:
        return None
    options = {}
    for pair in given:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise SubmitError(f"--option {pair!r}: write NAME=VALUE, such as single_stem=vocals")
        try:
            options[name] = json.loads(value)
        except ValueError:
            options[name] = value
    return json.dumps(options)


def _download_all(api: ApiClient, source: Path, stems: list[tuple[str, str]], directory: Path) -> int:
    if not stems:
        print("uvrd submit: the task succeeded but names no stems to download", file=sys.stderr)
        return 3
    failed = 0
    for stem, url in stems:
        try:
            path = download(url, directory, source, stem, api.headers_for(url))
        except (DownloadError, OSError) as e:
            print(f"uvrd submit: stem not downloaded: {e}", file=sys.stderr)
            failed += 1
            continue
        print(f"  {stem:<13} {path} ({path.stat().st_size} bytes)", flush=True)
    return 3 if failed else 0


def _writable(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OSError(f"cannot write into {directory}")
