"""The OpenAPI document against the live server, with schemathesis: generated
requests (valid and invalid) to every operation must never get a 5xx, and
every answer must be one the document lists, in the shape it gives."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from support import fuzz_examples
from uvrd.api import openapi
from uvrd.config import Config, ProcessorConfig
from devtools import tinymodel

# What a response must satisfy.  Not positive_data_acceptance: a request can fit the schema
# and still be refused for what only the server can judge (a hook host that does not resolve).
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_headers_conformance, checks.response_schema_conformance]


# The document as the test servers' configuration makes it.  Loaded at import, because
# schemathesis' fixture-based loader does not run under this pytest; the first test
# checks that the live server serves this very document.
CONFIG = Config(processor=ProcessorConfig(model=tinymodel.TINY_MODEL, extra_models=("Other.onnx",)))
DOCUMENT = openapi.document(CONFIG)
schema = schemathesis.openapi.from_dict(DOCUMENT)


@pytest.fixture(scope="module")
def fuzzed(fuzzed_api, origin, sample):
    fuzzed_api.audio_url = origin.serve(sample.read_bytes(), name="fuzzed.wav")
    return fuzzed_api


def test_the_server_serves_the_document_under_test(fuzzed):
    served = fuzzed.get("/openapi.json").json()
    assert served["servers"] == [{"url": fuzzed.url}]
    assert {**served, "servers": None} == {**DOCUMENT, "servers": None}


@schema.parametrize()
@settings(max_examples=fuzz_examples(25), deadline=None, suppress_health_check=list(HealthCheck))
def test_the_server_keeps_to_its_openapi_document(case, fuzzed):
    if case.operation.path == "/generate":
        headers = {"Authorization": _basic(*fuzzed.BASIC)}
    else:
        headers = dict(fuzzed.AUTH)
    _local_urls(case, fuzzed.audio_url)
    case.call_and_validate(base_url=fuzzed.url, headers=headers, checks=CHECKS, timeout=30)


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _local_urls(case, audio_url: str) -> None:
    """URLs the generator makes up name hosts that do not exist: where one is a well-formed URL,
    the audio comes from the test origin and the hook names loopback, so an answer does not
    depend on this machine's DNS or network (a real fetch of a made-up host is a 502)."""
    body = case.body
    if not isinstance(body, dict):
        return
    for name, local in (("audio", audio_url), ("hook_url", "http://127.0.0.1:9/hook")):
        if _is_url(body.get(name)):
            body[name] = local


def _is_url(value) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
