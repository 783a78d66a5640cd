"""The Flask application of ``uvrd api``: one per worker process."""

from __future__ import annotations

import collections
import time
from functools import partial

import structlog
from flask import Flask, Request, current_app, g, jsonify, request

from uvrd.api import cancel, errors, fleet, keys, openapi, page, query, quotas, retention, submit, task_list
from uvrd.api.auth import Authenticator
from uvrd.api.backend import Backend
from uvrd.api.context import EXTENSION, ApiContext, current
from uvrd.api.forms import AudioFormParser
from uvrd.api.probe import WATCHDOG_AGENT
from uvrd.api.spooler import Spool
from uvrd.config import Config
from uvrd.metrics import api as api_metrics
from uvrd.storage import open_storage

log = structlog.get_logger("uvrd.api")

# Room for the form fields next to the audio file in a multipart body.
FORM_OVERHEAD_BYTES = 64 * 1024


class SpoolingRequest(Request):
    """Each uploaded file streams straight into the spool directory, not through /tmp."""

    @property
    def form_data_parser_class(self):
        # Werkzeug builds the parser itself (make_form_data_parser): the server's own limit goes in here.
        return partial(AudioFormParser, max_files=current_app.extensions[EXTENSION].config.api.max_files_per_request)

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return current_app.extensions[EXTENSION].spool.incoming()


def create_app(config: Config) -> Flask:
    app = Flask("uvrd.api")
    app.request_class = SpoolingRequest
    app.config["MAX_CONTENT_LENGTH"] = config.api.max_upload_bytes + FORM_OVERHEAD_BYTES
    app.json.sort_keys = False

    spool = Spool(config.processor.spool_dir, config.api.max_upload_bytes)
    spool.prepare()
    backend = Backend(config).start()
    auth = Authenticator(config.api.tokens, config.api.basic_auth, config.api.link_secret, backend.keys)
    app.extensions[EXTENSION] = ApiContext(config, auth, spool, backend, open_storage(config))

    errors.register(app, config.api.max_upload_bytes)
    app.register_blueprint(submit.blueprint)
    app.register_blueprint(query.blueprint)
    app.register_blueprint(cancel.blueprint)
    app.register_blueprint(retention.blueprint)
    app.register_blueprint(fleet.blueprint)
    app.register_blueprint(keys.blueprint)
    app.register_blueprint(quotas.blueprint)
    app.register_blueprint(task_list.blueprint)
    app.register_blueprint(page.blueprint)
    _add_access_log(app)
    api_metrics.count_refusals(app)
    document = openapi.document(config)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        backend = current().backend
        reason = backend.not_ready_reason()
        if reason:
            return errors.error_response(503, reason)
        # How many live workers run their model where (a GPU that fell back to the CPU shows here),
        # from the heartbeats; counts only, as this answer needs no token.
        providers = collections.Counter(str(w.get("execution_provider")) for w in backend.workers.workers()
                                        if w["alive"])
        return jsonify(status="ready", execution_providers=dict(providers))

    @app.get("/openapi.json")
    def openapi_json():
        return jsonify(document)

    return app


def _add_access_log(app: Flask) -> None:
    """One line per request, with the task_uuid a handler bound; never headers or query strings
    (they carry tokens and link signatures)."""

    @app.before_request
    def _start():
        structlog.contextvars.clear_contextvars()
        g.started = time.monotonic()

    @app.after_request
    def _access(response):
        if request.path == "/readyz" and request.user_agent.string == WATCHDOG_AGENT:
            return response  # the master's probe, about once a second: it logs what changes itself
        started = g.get("started")
        fields = {}
        if response.status_code >= 400:
            # A refusal's sentence names fields and hosts, never credentials: worth having next to the status.
            fields["error"] = (response.get_json(silent=True) or {}).get("error")
        log.info("request", method=request.method, path=request.path, status=response.status_code,
                 duration_ms=round((time.monotonic() - started) * 1000, 1) if started else None,
                 remote_addr=request.remote_addr, response_bytes=response.content_length, **fields)
        return response

    @app.teardown_request
    def _clear(exc):
        structlog.contextvars.clear_contextvars()
