"""A webhook endpoint on loopback that records what it receives: for the demo and the tests."""

from __future__ import annotations

import http.server
import threading
import time


class WebhookReceiver:
    """A real HTTP server standing in for a user's webhook endpoint, on loopback (or *host*).

    *script* lists the status codes of the first answers (then 200 for good);
    *delay* holds each answer back that many seconds.  ``go_down()`` closes the
    port (connections refused) until ``come_back()`` listens on it again.
    """

    def __init__(self, script: list[int] | None = None, delay: float = 0.0, host: str = "127.0.0.1"):
        self.host = host
        self.script = list(script or [])
        self.delay = delay
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    code = receiver.script.pop(0) if receiver.script else 200
                    receiver.requests.append({"headers": dict(self.headers), "body": body, "status": code,
                                              "at": time.monotonic()})
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._handler = Handler
        self._serve(0)
        self.url = f"http://{host}:{self.httpd.server_port}/hook"

    def _serve(self, port: int) -> None:
        self.httpd = http.server.ThreadingHTTPServer((self.host, port), self._handler)
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def go_down(self) -> None:
        self.close()

    def come_back(self) -> None:
        self._serve(self.httpd.server_port)

    def successes(self) -> list[dict]:
        with self._lock:
            return [r for r in self.requests if 200 <= r["status"] < 300]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
