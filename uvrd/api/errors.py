"""Every refusal is JSON ``{"error": "<one sentence>"}`` with the status that fits.

A few refusals add members a client acts on without reading the sentence (a batch submission's
``part`` and ``tasks``, see uvrd/api/batch.py); ``error`` is always there.
"""

from __future__ import annotations

import errno

import structlog
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from uvrd.api.worker import BodyTimeout

log = structlog.get_logger("uvrd.api")

FULL_RETRY_AFTER_S = 30


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None, details: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.details = details or {}  # further members of the JSON body, next to "error"


def error_response(status: int, message: str, headers: dict | None = None, details: dict | None = None):
    response = jsonify(error=message, **(details or {}))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register(app: Flask, max_upload_bytes: int) -> None:
    @app.errorhandler(ApiError)
    def _api_error(e: ApiError):
        return error_response(e.status, e.message, e.headers, e.details)

    @app.errorhandler(BodyTimeout)
    def _body_timeout(e: BodyTimeout):
        return error_response(408, str(e))

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(e):
        return error_response(413, f"the request is over the {max_upload_bytes}-byte upload limit")

    @app.errorhandler(HTTPException)
    def _http(e: HTTPException):
        # Werkzeug's own refusals (unknown path, wrong method, bad request line).
        response = error_response(e.code or 500, _sentence(e))
        if e.code == 405 and e.valid_methods:
            response.headers["Allow"] = ", ".join(e.valid_methods)
        return response

    @app.errorhandler(OSError)
    def _os_error(e: OSError):
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            return _unexpected(e)
        # A full spool is the server's trouble and passes: say so, and when to come back.
        log.warning("spool is full; upload refused", error=str(e))
        return error_response(507, "the server has no room to store the upload right now; try again later",
                              {"Retry-After": str(FULL_RETRY_AFTER_S)})

    @app.errorhandler(Exception)
    def _unexpected(e: Exception):
        log.exception("request failed")
        return error_response(500, "internal error; the request was not completed")


def _sentence(e: HTTPException) -> str:
    return {404: "no such endpoint", 405: "method not allowed on this endpoint"}.get(
        e.code, (e.description or e.name or "request refused").split("\n")[0])
