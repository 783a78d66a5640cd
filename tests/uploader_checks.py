"""What the uploader's tests look at, from outside the uploader: the results they send, the broker's
committed offsets and topics, the webhook receiver's record of calls, the Prometheus registry and
the log lines the journal would get.

Shared by the service tier (uploaders in the test process) and the system tier (``uvrd uploader``
subprocesses), so that no test module imports another."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from prometheus_client import REGISTRY, generate_latest

from scrape import Scraped
from support import WebhookReceiver, logging_restored
from uvrd.runtime import logs


@pytest.fixture
def receiver():
    """A real HTTP webhook endpoint on loopback that answers 200 and records every call."""
    r = WebhookReceiver()
    yield r
    r.close()


def result_for(stack, hook_url, success=True, **extra) -> dict:
    """A result as the processor writes it: its stems under the stack's output, or a decode failure."""
    task_uuid = str(uuid.uuid4())
    value = {"task_uuid": task_uuid, "success": success, "hook_url": hook_url, **extra}
    if success:
        stems = {"vocals": str(stack.output / task_uuid / "vocals.wav"),
                 "instrumental": str(stack.output / task_uuid / "instrumental.wav")}
        value.update(stems=stems, vocals_path=stems["vocals"], instrumental_path=stems["instrumental"])
    else:
        value["error_message"] = "audio file could not be decoded"
    return value


def uploader_group(stack) -> str:
    return f"{stack.group}-uploader"


def committed(stack, kafka) -> int:
    """The uploaders' committed offset on the results topic (0 before any commit)."""
    return kafka.committed(uploader_group(stack), stack.results).get(0, 0)


def states(stack, kafka) -> list[dict]:
    return [json.loads(r.value) for r in kafka.read_all(stack.status)]


def outcomes(stack, kafka, task_uuids) -> dict[str, tuple[list[str], list[dict]]]:
    """Per task: the states of its status records, and the headers of its dead-letter records."""
    found = {t: ([], []) for t in task_uuids}
    for state in states(stack, kafka):
        if state["task_uuid"] in found:
            found[state["task_uuid"]][0].append(state["state"])
    for record in kafka.read_all(stack.dead_letter):
        task_uuid = json.loads(record.value)["task_uuid"]
        if task_uuid in found:
            found[task_uuid][1].append(dict(record.headers))
    return found


def delivered_once(results) -> dict:
    """What :func:`outcomes` gives when each result was delivered and recorded exactly once."""
    return {r["task_uuid"]: (["delivered"], []) for r in results}


def webhook_counts(receiver) -> dict[str, int]:
    """How many calls each task's webhook got (a WebhookReceiver's or a peers.py server's)."""
    counts: dict[str, int] = {}
    for request in receiver.requests:
        body = request["body"] if isinstance(request, dict) else request.body
        task_uuid = json.loads(body)["task_uuid"]
        counts[task_uuid] = counts.get(task_uuid, 0) + 1
    return counts


def error_header(dead_letter_record) -> bytes:
    return dict(dead_letter_record.headers)["uvrd-error"]


class Counted:
    """What was counted in the test process's Prometheus registry since this was made.

    In-process daemons share the process's ``prometheus_client.REGISTRY`` with every test the worker
    ran before, so a test reads it before and after, and looks at the difference only."""

    def __init__(self):
        self.before = _registry()

    def labelled(self, name: str, label: str) -> dict[str, float]:
        """*name*'s growth by the value of *label*, the labels that did not grow left out."""
        before, after = self.before.labelled(name, label), _registry().labelled(name, label)
        grown = {value: count - before.get(value, 0) for value, count in after.items()}
        return {value: n for value, n in grown.items() if n}

    def value(self, name: str, **labels) -> float:
        return _registry().value(name, **labels) - self.before.value(name, **labels)


def _registry() -> Scraped:
    return Scraped(generate_latest(REGISTRY).decode())


class Journal:
    """The log lines uvrd writes, as `uvrd uploader` sets its logging up (runtime/logs.py): what
    the journal would get, here in a file the test reads."""

    def __init__(self, path):
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def events(self, name: str) -> list[dict]:
        found = []
        for line in self.text().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found


@pytest.fixture
def journal(tmp_path):
    """Logging set up by logs.configure at *level* (``journal.at("DEBUG")``), as the daemon's command
    does, into a file; the test process's logging as it was afterwards, so later tests are untouched."""
    opened: list[io.TextIOBase] = []

    def at(log_level: str = "INFO") -> Journal:
        path = tmp_path / "journal.jsonl"
        stream = open(path, "w", buffering=1)  # line-buffered: every line is in the file once written
        opened.append(stream)
        logs.configure("uvrd-uploader", level=log_level, stream=stream)
        return Journal(path)

    with logging_restored():
        yield at
    for stream in opened:
        stream.close()
