"""``uvrd submit FILE``: upload to the API; with ``--wait``, follow the task to its end;
with ``--output DIR``, also download its stems there.

The API address and token come from the options, then UVRD_API_URL /
UVRD_API_TOKEN, then the configuration (api.public_url, the first of
api.tokens).  Exit status: 0 when the task succeeded (and, with --output,
every stem arrived whole), 1 when it failed or was cancelled, 2 on a refused
submission, an unreachable API or an output directory that cannot be written,
3 when a stem could not be downloaded.  While the task runs, --wait draws its
progress: a bar on a terminal, a line per tenth otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from urllib.parse import urlsplit

import requests

from uvrd.cli import add_config_argument, load_config
from uvrd.stem_download import DownloadError, download

FINAL_OK = ("succeeded", "delivered")
FINAL_BAD = ("failed", "cancelled", "delivery_failed")
BAR_WIDTH = 30


class SubmitError(Exception):
    pass


def add_arguments(parser) -> None:
    parser.add_argument("file", type=Path, help="the audio file to separate")
    parser.add_argument("--hook-url", help="webhook to call with the result")
    parser.add_argument("--wait", action="store_true", help="follow the task until it ends")
    parser.add_argument("--output", type=Path, metavar="DIR",
                        help="wait, then download each stem into DIR as <file>_<stem>.<ext>")
    parser.add_argument("--priority", type=int, help="1 (lowest) to 5 (highest); default 3")
    parser.add_argument("--model", help="a model this deployment serves")
    parser.add_argument("--output-format", help="flac, wav, mp3, ...")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds --wait waits at most")
    add_endpoint_arguments(parser)


def submit(api: str, token: str, path: Path, hook_url: str | None = None, **fields) -> dict:
    form = {k: str(v) for k, v in {"hook_url": hook_url, **fields}.items() if v is not None}
    with path.open("rb") as f:
        response = requests.post(f"{api.rstrip('/')}/v1/tasks", headers=auth(token), data=form,
                                 files={"audio": (path.name, f)}, timeout=600)
    if response.status_code != 202:
        raise SubmitError(f"the API refused the file: HTTP {response.status_code}: {error_of(response)}")
    return response.json()


def status(api: str, token: str, task_uuid: str) -> dict:
    response = requests.get(f"{api.rstrip('/')}/v1/tasks/{task_uuid}", headers=auth(token), timeout=30)
    if response.status_code == 404:
        return {"task_uuid": task_uuid, "state": "queued"}  # the status topic has not caught up yet
    if response.status_code != 200:
        raise SubmitError(f"status request failed: HTTP {response.status_code}: {error_of(response)}")
    return response.json()


def follow(api: str, token: str, task_uuid: str, timeout: float, out=sys.stdout) -> dict:
    """Print each state change with the elapsed time, and the progress while it runs, until the task
    ends; return its last status."""
    started = time.monotonic()
    last = None
    bar = ProgressBar(out)
    while True:
        current = status(api, token, task_uuid)
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


def endpoint(args) -> tuple[str, str]:
    """The API's base URL and token: the options, then UVRD_API_URL / UVRD_API_TOKEN, then the config."""
    api = args.api or os.environ.get("UVRD_API_URL")
    token = args.token or os.environ.get("UVRD_API_TOKEN")
    if not api or not token:
        config = load_config(args)
        api = api or config.api.public_url
        token = token or (config.api.tokens[0] if config.api.tokens else "")
    return api, token


def add_endpoint_arguments(parser) -> None:
    parser.add_argument("--api", help="API base URL (default: api.public_url)")
    parser.add_argument("--token", help="bearer token (default: UVRD_API_TOKEN or the first api.tokens)")
    add_config_argument(parser)


def run(args) -> int:
    api, token = endpoint(args)
    try:
        if args.output is not None:
            _writable(args.output)  # before the task exists: its stems must have somewhere to go
        accepted = submit(api, token, args.file, args.hook_url, priority=args.priority, model=args.model,
                          output_format=args.output_format)
        print(f"task {accepted['task_uuid']} accepted: {accepted['status_url']}", flush=True)
        if not args.wait and args.output is None:
            return 0
        final = follow(api, token, accepted["task_uuid"], args.timeout)
    except (SubmitError, requests.RequestException, OSError) as e:
        print(f"uvrd submit: {e}", file=sys.stderr)
        return 2
    # "delivered" says only that the webhook went out; "outcome" says how the work ended.
    outcome = final.get("outcome") or final["state"]
    if outcome == "cancelled":
        print(f"task cancelled (asked at {final.get('cancel_requested_at') or 'an unknown time'})")
        return 1
    if outcome == "failed" or final["state"] in FINAL_BAD:
        print(f"task failed: {final.get('error_message') or final.get('delivery_error') or 'no reason given'}")
        return 1
    stems = sorted((final.get("stems") or {}).items())
    if args.output is None:
        for stem, url in stems:
            print(f"  {stem:<13} {url}")
        return 0
    return _download_all(api, token, args.file, stems, args.output)


def _download_all(api: str, token: str, source: Path, stems: list[tuple[str, str]], directory: Path) -> int:
    if not stems:
        print("uvrd submit: the task succeeded but names no stems to download", file=sys.stderr)
        return 3
    failed = 0
    for stem, url in stems:
        # The token goes only to the API itself, never to a bucket's presigned link.
        headers = auth(token) if _same_origin(url, api) else {}
        try:
            path = download(url, directory, source, stem, headers)
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


def _same_origin(url: str, api: str) -> bool:
    a, b = urlsplit(url), urlsplit(api)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"} if token else {}


def error_of(response) -> str:
    try:
        return response.json().get("error") or response.text[:200]
    except ValueError:
        return response.text[:200]
