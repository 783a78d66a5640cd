"""The web page at ``/``: plain HTML, JavaScript and CSS from uvrd/api/web/, no build step.

The page holds no data, so it is served without a token; every call it makes to /v1 carries the
bearer token the user typed in (kept in the tab's sessionStorage).  It is served with a strict
Content-Security-Policy: its own scripts and styles only (no inline ones), its calls to this origin,
and audio from this origin (the stems' signed links) or, with stems in a bucket, from the bucket.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from urllib.parse import urlsplit

from flask import Blueprint, Response, request

from uvrd.api.context import current
from uvrd.api.errors import ApiError
from uvrd.config import Config

blueprint = Blueprint("page", __name__)

# Every file the page is made of, and its type: nothing else under web/ is served.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


@blueprint.get("/")
def index():
    return _serve("index.html")


@blueprint.get("/web/<name>")
def asset(name: str):
    if name not in ASSETS or name == "index.html":
        raise ApiError(404, "no such endpoint")
    return _serve(name)


def _serve(name: str) -> Response:
    response = Response(_read(name), content_type=ASSETS[name])
    response.headers["Content-Security-Policy"] = content_security_policy(current().config)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    # Revalidated on each load, so that an upgrade's page is never mixed with the old script.
    response.headers["Cache-Control"] = "no-cache"
    response.add_etag()
    return response.make_conditional(request)


@cache
def _read(name: str) -> bytes:
    return (resources.files("uvrd.api") / "web" / name).read_bytes()


def content_security_policy(config: Config) -> str:
    bucket = " ".join(bucket_origins(config))
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"media-src 'self' blob: {bucket}".rstrip(),
        f"connect-src 'self' {bucket}".rstrip(),
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def bucket_origins(config: Config) -> list[str]:
    """Where the stems' links point when they are in a bucket: its endpoint (path-style) and its
    subdomains (virtual-hosted style); AWS's own endpoints when none is set."""
    storage = config.storage
    if storage.backend != "s3":
        return []
    if not storage.endpoint_url:
        return ["https://*.amazonaws.com"]
    parts = urlsplit(storage.endpoint_url)
    return [f"{parts.scheme}://{parts.netloc}", f"{parts.scheme}://*.{parts.netloc}"]
