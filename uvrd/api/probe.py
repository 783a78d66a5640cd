"""``GET /readyz`` over a plain socket, advanced a step at a time without ever blocking.

The gunicorn master asks each worker this once a second (uvrd/api/watchdog.py); its loop also
reaps and replaces workers and handles signals, so it must never wait on a worker that may be the
one that is stuck.  Each :meth:`ReadinessProbe.poll` does what the socket allows right now.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

from uvrd.runtime.deadline import Deadline

WATCHDOG_AGENT = "uvrd-watchdog"
REQUEST = (f"GET /readyz HTTP/1.1\r\nHost: uvrd-api\r\nUser-Agent: {WATCHDOG_AGENT}\r\n"
           "Connection: close\r\n\r\n").encode()
# /readyz answers a line of JSON; anything longer is not it.
MAX_ANSWER_BYTES = 16 * 1024


@dataclass(frozen=True)
class ProbeAnswer:
    ready: bool
    reason: str = ""  # why not, when not ready


class ReadinessProbe:
    def __init__(self, address: tuple, timeout: float):
        self.deadline = Deadline.after(timeout)
        self.timeout = timeout
        self.unsent = REQUEST
        self.received = bytearray()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex(address)  # on its way; a refusal shows at the first send

    def poll(self) -> ProbeAnswer | None:
        """The answer once there is one (ready, or why not); None while it is still on its way."""
        try:
            while self.unsent:
                self.unsent = self.unsent[self.sock.send(self.unsent):]
            while True:
                data = self.sock.recv(MAX_ANSWER_BYTES)
                if not data:
                    return _answer(bytes(self.received))
                self.received += data
                if len(self.received) > MAX_ANSWER_BYTES:
                    return ProbeAnswer(False, "/readyz answered more than expected")
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:
            return ProbeAnswer(False, f"/readyz could not be asked: {e.strerror or e}")
        if self.deadline.expired():
            return ProbeAnswer(False, f"/readyz did not answer within {self.timeout:g} s")
        return None

    def close(self) -> None:
        self.sock.close()


def _answer(raw: bytes) -> ProbeAnswer:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split(b" ")
    if len(status) >= 2 and status[1] == b"200":
        return ProbeAnswer(True)
    try:
        reason = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        reason = (b" ".join(status[1:]) or b"no answer").decode("latin-1")
    return ProbeAnswer(False, f"/readyz: {reason}")
