"""The HTTP client of uvrd's api: one method per call the commands and the demo make.

Every URL is built here, from the api's base URL and path parts that are each quoted, so a task
uuid or a letter's coordinates can never reach another route.  An answer other than the one a
call expects is a :class:`Refused` naming the status and the api's own error sentence; no answer
at all is an :class:`Unreachable`.  The bearer token goes only to the api's own origin, never to
a bucket's presigned stem link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests

# A long upload may wait on a slow link; everything else is a small JSON answer.
UPLOAD_TIMEOUT_S = 600
CALL_TIMEOUT_S = 30
REPLAY_TIMEOUT_S = 60


class Unreachable(Exception):
    """The api did not answer (refused connection, DNS, a timeout)."""


class Refused(Exception):
    """The api answered, but not as the call expects: ``status`` and the api's ``error`` sentence."""

    def __init__(self, status: int, error: str):
        super().__init__(f"HTTP {status}: {error}")
        self.status = status
        self.error = error


class NotFound(Refused):
    """404: no such task, letter or route."""


class Conflict(Refused):
    """409: the task has ended already, the letter was replayed already, or the key's name is taken."""


_REFUSALS: dict[int, type[Refused]] = {404: NotFound, 409: Conflict}


class ApiClient:
    def __init__(self, url: str, token: str, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self._http = session or requests.Session()

    # -- tasks ----------------------------------------------------------------------------------
    def submit(self, audio: Path, form: dict[str, str]) -> dict[str, Any]:
        """Upload *audio* with the task's *form* fields: the api's 202 answer (task_uuid, status_url)."""
        with audio.open("rb") as f:
            return self._call("POST", ("v1", "tasks"), 202, timeout=UPLOAD_TIMEOUT_S, data=form,
                              files={"audio": (audio.name, f)})

    def task(self, task_uuid: str) -> dict[str, Any] | None:
        """The task's status; None while the api does not know it yet (its status topic may lag)."""
        try:
            return self._call("GET", ("v1", "tasks", task_uuid), 200)
        except NotFound:
            return None

    def cancel(self, task_uuid: str) -> dict[str, Any]:
        """Ask for the task's cancellation: the api's 202 answer; NotFound or Conflict (it had ended)."""
        return self._call("DELETE", ("v1", "tasks", task_uuid), 202)

    # -- the fleet ------------------------------------------------------------------------------
    def workers(self) -> list[dict[str, Any]]:
        return self._call("GET", ("v1", "workers"), 200)["workers"]

    def queues(self) -> dict[str, Any]:
        return self._call("GET", ("v1", "queues"), 200)

    # -- dead letters ---------------------------------------------------------------------------
    def dead_letters(self, **query: str | int) -> dict[str, Any]:
        return self._call("GET", ("v1", "dead-letters"), 200, params=query)

    def dead_letter(self, partition: int, offset: int) -> dict[str, Any]:
        return self._call("GET", ("v1", "dead-letters", str(partition), str(offset)), 200)

    def replay(self, partition: int, offset: int) -> dict[str, Any]:
        """Replay the letter: the api's 202 answer; Conflict if it was replayed already."""
        return self._call("POST", ("v1", "dead-letters", str(partition), str(offset), "replay"), 202,
                          timeout=REPLAY_TIMEOUT_S)

    # -- keys -----------------------------------------------------------------------------------
    def add_key(self, name: str, scope: str, **quota: int | None) -> dict[str, Any]:
        """A new key: the api's 201 answer, with its token (shown this once); Conflict if the name is taken.
        *quota*: max_active, audio_seconds_per_day (None: no limit)."""
        return self._call("POST", ("v1", "keys"), 201, json={"name": name, "scope": scope, **quota})

    def set_quota(self, name: str, **quota: int | None) -> dict[str, Any]:
        """Change the key's quota (each given member; None removes that limit): the key as listed."""
        return self._call("PATCH", ("v1", "keys", name), 200, json=quota)

    def usage(self, key: str | None = None) -> dict[str, Any]:
        return self._call("GET", ("v1", "usage"), 200, params={"key": key} if key else {})

    def keys(self) -> list[dict[str, Any]]:
        return self._call("GET", ("v1", "keys"), 200)["keys"]

    def revoke_key(self, name: str) -> dict[str, Any]:
        """Revoke the key (asking again answers the same); NotFound, or Conflict for a configured token."""
        return self._call("DELETE", ("v1", "keys", name), 200)

    def whoami(self) -> dict[str, Any]:
        return self._call("GET", ("v1", "whoami"), 200)

    # -- stems ----------------------------------------------------------------------------------
    def headers_for(self, url: str) -> dict[str, str]:
        """The headers a download of *url* carries: the token only for the api's own origin."""
        return self._auth() if _same_origin(url, self.url) else {}

    # -- the one way a call is made -------------------------------------------------------------
    def _call(self, method: str, parts: tuple[str, ...], expect: int, timeout: float = CALL_TIMEOUT_S,
              **kwargs: Any) -> Any:
        url = self.url + "/" + "/".join(quote(part, safe="") for part in parts)
        try:
            response = self._http.request(method, url, headers=self._auth(), timeout=timeout, **kwargs)
        except requests.RequestException as e:
            raise Unreachable(f"the API did not answer: {e}") from e
        if response.status_code != expect:
            raise _REFUSALS.get(response.status_code, Refused)(response.status_code, _error_of(response))
        try:
            return response.json()
        except ValueError:
            raise Refused(response.status_code, f"the answer is not JSON: {response.text[:200]!r}") from None

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _error_of(response: requests.Response) -> str:
    """The api's own sentence for a refusal (its JSON ``error``), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return (body.get("error") if isinstance(body, dict) else None) or response.text[:200]


def _same_origin(url: str, api: str) -> bool:
    a, b = urlsplit(url), urlsplit(api)
    return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)
