"""Hostile task and result messages, each with the words its error must contain.

Fed straight to the topics, bypassing the API's checks, as a broken or
malicious producer would.  Each case is one message; none may cost more than
its own failure record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from uvrd.messages import TASK_UUID_RE


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes | None
    words: str                     # the error must contain these
    key: bytes | None = None
    # Tasks: what the failure result must carry.  Results: the task whose delivery was tried and refused.
    task_uuid: str | None = None


def _j(value) -> bytes:
    return json.dumps(value).encode()


def _nested(opening: bytes, closing: bytes, depth: int) -> bytes:
    return opening * depth + b"1" + closing * depth


HOOK = "http://hooks.example/cb"


def task_cases(spool: Path, outside: Path, sample: bytes) -> list[Case]:
    """*outside*: a real audio file outside the spool; *sample*: audio bytes for files the tasks name."""
    (spool / "escape.wav").symlink_to(outside)
    (spool / "loop.wav").symlink_to(spool / "loop.wav")
    os.mkfifo(spool / "fifo.wav")
    (spool / "sub").mkdir()
    (spool / "sub" / "up.wav").symlink_to("../../outside.wav")

    n = iter(range(1000))

    def task(**fields) -> tuple[dict, str]:
        i = next(n)
        task_uuid = fields.pop("task_uuid", f"hostile-{i}")
        if "audio_path" not in fields:
            # Each its own input file.
            path = spool / f"in-{i}.wav"
            path.write_bytes(sample)
            fields["audio_path"] = str(path)
        return {"task_uuid": task_uuid, "hook_url": HOOK, **fields}, task_uuid

    def case(name: str, words: str, **fields) -> Case:
        value, task_uuid = task(**fields)
        return Case(name, _j(value), words, task_uuid=task_uuid if TASK_UUID_RE.fullmatch(task_uuid) else None)

    cases = [
        # Not a JSON object at all.
        Case("tombstone", None, "tombstone", key=b"tomb-key-1", task_uuid="tomb-key-1"),
        Case("empty bytes", b"", "not JSON"),
        Case("invalid UTF-8", b"\xff\xfe\x00garbage", "not UTF-8"),
        Case("truncated UTF-8 sequence", b'{"task_uuid": "caf\xc3', "not UTF-8"),
        Case("array bomb", _nested(b"[", b"]", 100_000), "nested too deeply"),
        Case("object bomb", _nested(b'{"a":', b"}", 60_000), "nested too deeply"),
        Case("array", b"[1, 2]", "must be a JSON object, not an array"),
        Case("string", b'"task"', "must be a JSON object, not a string"),
        Case("null", b"null", "must be a JSON object, not null"),
        Case("garbage with a usable key", b"\x00\x01binary", "not JSON", key=b"key-uuid-2", task_uuid="key-uuid-2"),
        # Missing keys and wrong types.
        Case("no task_uuid", _j({"audio_path": "/x.wav", "hook_url": HOOK}), "missing the field 'task_uuid'",
             key=b"key-uuid-3", task_uuid="key-uuid-3"),
        Case("no audio_path", _j({"task_uuid": "hostile-na", "hook_url": HOOK}), "missing the field 'audio_path'",
             task_uuid="hostile-na"),
        Case("numeric task_uuid", _j({"task_uuid": 42, "audio_path": "/x.wav", "hook_url": HOOK}),
             "'task_uuid' must be a string, not a number"),
        case("array audio_path", "'audio_path' must be a string, not an array", audio_path=["a.wav"]),
        case("object hook_url", "'hook_url' must be a string, not an object", hook_url={"url": HOOK}),
        case("boolean model", "'model' must be a non-empty string", model=True),
        # Huge fields.
        case("4097-character audio_path", "1-4096 characters", audio_path="a" * 4097),
        case("3000-character hook_url", "hook_url", hook_url="http://hooks.example/" + "a" * 3000),
        case("200 kB model name", "unknown model", model="m" * 200_000),
        case("900 kB padding", "unknown output_format", output_format="x", padding="p" * 900_000),
        # Names that are not what they claim to be.
        case("path-like task_uuid", "'task_uuid' must be 1-128 letters", task_uuid="../../etc/cron.d/x"),
        case("NUL in audio_path", "without NUL", audio_path=f"{spool}/a\u0000.wav"),
        case("lone surrogate in audio_path", "not valid Unicode", audio_path=f"{spool}/\ud800.wav"),
        case("traversal in output_format", "unknown output_format", output_format="../../wav"),
        # Paths out of the spool, directly or through links.
        case("dot-dot out of the spool", "outside the spool", audio_path=f"{spool}/../outside.wav"),
        case("relative dot-dot", "outside the spool", audio_path="../../../../etc/passwd"),
        case("the spool itself", "outside the spool", audio_path=str(spool)),
        case("absolute device", "outside the spool", audio_path="/dev/zero"),
        case("proc file", "outside the spool", audio_path="/proc/self/environ"),
        case("symlink out of the spool", "outside the spool", audio_path=str(spool / "escape.wav")),
        case("relative symlink out via a subdirectory", "outside the spool", audio_path=str(spool / "sub" / "up.wav")),
        case("symlink loop", "cannot be read", audio_path=str(spool / "loop.wav")),
        case("FIFO in the spool", "not a regular file", audio_path=str(spool / "fifo.wav")),
        # hook_url with odd schemes and ports.
        case("file hook_url", "hook_url", hook_url="file:///etc/passwd"),
        case("gopher hook_url", "hook_url", hook_url="gopher://hooks.example:70/_SET"),
        case("javascript hook_url", "hook_url", hook_url="javascript:alert(1)"),
        case("port out of range", "hook_url", hook_url="http://hooks.example:99999/"),
        case("non-numeric port", "hook_url", hook_url="http://hooks.example:http/"),
        case("broken IPv6 host", "hook_url", hook_url="http://[::1/"),
        case("no host", "hook_url", hook_url="http:///cb"),
    ]
    return cases


def result_cases(stems_dir: Path) -> list[Case]:
    """Results as a broken or forged processor might write them."""
    def result(**fields) -> bytes:
        return _j({"task_uuid": "r-1", "success": True, "hook_url": HOOK,
                   "stems": {"vocals": str(stems_dir / "vocals.wav")}, **fields})

    def refused(name: str, url: str, words: str) -> Case:
        # Well formed but for its hook_url: the delivery is refused, so the task's state says so too.
        task_uuid = f"refused-{len(name)}-{name.replace(' ', '-')}"
        return Case(name, result(task_uuid=task_uuid, hook_url=url), words, task_uuid=task_uuid)

    return [
        Case("tombstone", None, "tombstone"),
        Case("empty bytes", b"", "not JSON"),
        Case("invalid UTF-8", b'{"task_uuid": "\xff\xfe"}', "not UTF-8"),
        Case("array bomb", _nested(b"[", b"]", 100_000), "nested too deeply"),
        Case("object bomb", _nested(b'{"a":', b"}", 60_000), "nested too deeply"),
        Case("array", b"[]", "must be a JSON object"),
        Case("no task_uuid", _j({"success": True, "hook_url": HOOK}), "no valid task_uuid"),
        Case("path-like task_uuid", result(task_uuid="../../x"), "no valid task_uuid"),
        Case("numeric task_uuid", result(task_uuid=7), "no valid task_uuid"),
        Case("string success", result(success="yes"), "'success' must be true or false"),
        Case("numeric hook_url", result(hook_url=7), "'hook_url' must be a string or null"),
        Case("stems as a list", result(stems=["vocals.wav"]), "'stems' must map"),
        Case("stem path a number", result(stems={"vocals": 5}), "'stems' must map"),
        Case("lone surrogate in a stem name", result(stems={"voc\udc80als": "/x.wav"}), "not valid Unicode"),
        refused("file hook_url", "file:///etc/passwd", "only http and https"),
        refused("gopher hook_url", "gopher://93.184.215.14:70/_SET", "only http and https"),
        refused("credentials in hook_url", "http://user:pw@93.184.215.14/", "credentials"),
        refused("port out of range", "http://93.184.215.14:99999/", "not a valid URL"),
        refused("port zero", "http://93.184.215.14:0/", "port 0"),
        refused("private address", "http://10.0.0.1:22/", "not a public address"),
        refused("loopback address", "http://127.0.0.1:6379/", "not a public address"),
        refused("metadata address", "http://169.254.169.254/latest/meta-data/", "not a public address"),
    ]
