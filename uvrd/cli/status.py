"""``uvrd status``: the whole deployment at a glance, from any api: its workers (what each holds and
does), the queues and their backlogs, the tasks in flight and the dead letters.

The API address and token come as for ``uvrd submit``.  Exit status 0; 2 when the API could not
be reached or refused; 1 when no worker is alive (a deployment that cannot do its work).
"""

from __future__ import annotations

import json
import sys

from uvrd.cli.endpoint import add_endpoint_arguments, client
from uvrd.client.api_client import Refused, Unreachable


def add_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object, for scripts")
    add_endpoint_arguments(parser)


def run(args) -> int:
    api = client(args)
    try:
        workers, queues = api.workers(), api.queues()
    except (Refused, Unreachable) as e:
        print(f"uvrd status: {e}", file=sys.stderr)
        return 2
    alive = [w for w in workers if w.get("alive")]
    if args.json:
        print(json.dumps({"workers": workers, "queues": queues}))
    else:
        print(render(workers, queues))
    return 0 if alive else 1


def render(workers: list[dict], queues: dict) -> str:
    alive = [w for w in workers if w.get("alive")]
    lines = [f"workers: {len(alive)} alive" + (f", {len(workers) - len(alive)} lost" if len(workers) > len(alive)
                                                 else "")]
    for w in workers:
        models = ", ".join(m.get("model", "?") + ("" if m.get("warm") else " (cold)") for m in w.get("models") or [])
        state = w.get("state", "?") if w.get("alive") else f"lost {w.get('seconds_since', 0):.0f} s ago"
        task = w.get("task") or {}
        doing = ""
        if task:
            done = f" {task['progress']:.0%}" if isinstance(task.get("progress"), (int, float)) else ""
            doing = f"  task {task.get('task_uuid')}{done} {task.get('step') or ''}".rstrip()
        lines.append(f"  {w.get('worker', '?'):<40} {state:<10} {w.get('device') or '?':<6} {models}{doing}")
    lines.append("queues:")
    for q in queues.get("tasks", []):
        lines.append(f"  priority {q['priority']}  {q['topic']:<32} {q['backlog']} waiting")
    results = queues.get("results", {})
    lines.append(f"  results     {results.get('topic', '?'):<32} {results.get('backlog', 0)} waiting for their webhook")
    in_flight = sum(1 for w in alive if w.get("task"))
    lines.append(f"tasks in flight: {in_flight}")
    lines.append(f"dead letters: {queues.get('dead_letters', 0)}")
    return "\n".join(lines)
