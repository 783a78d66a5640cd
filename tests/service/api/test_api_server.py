"""The ``uvrd api`` process: start-up, a graceful stop, a broker it cannot reach, its logs."""

from __future__ import annotations

import base64
import signal
import socket
import threading

import pytest
import requests

from support import fill, small_filesystem, wait_until
from uvrd.broker.loopback import free_port


def not_serving(server) -> bool:
    """No worker takes a new connection: closed, or left unaccepted in the backlog."""
    try:
        requests.get(server.url + "/healthz", timeout=0.5)
    except (requests.ConnectionError, requests.Timeout):
        return True
    return False


def test_sigterm_lets_the_request_in_flight_finish_then_exits_0(api_stack, origin, kafka, sample):
    server = api_stack.start(allow_private_urls=True)
    server.daemon.notify.wait_for(lambda line: line == "READY=1", 10, "READY=1")  # gunicorn speaks sd_notify
    # A worker signalled before gunicorn installed its handlers would miss the signal.
    wait_until(lambda: len(server.daemon.events("api worker ready")) == 2, 30, "both workers to be ready")
    url = origin.serve(sample.read_bytes())
    reached, release = origin.hold(url)
    answers = []
    client = threading.Thread(target=lambda: answers.append(server.post(
        "/v1/tasks", headers=server.AUTH, json={"audio": url, "hook_url": "http://127.0.0.1:9/", "priority": 1})))
    client.start()
    assert reached.wait(30), "the API never fetched the audio"

    server.daemon.signal(signal.SIGTERM)
    wait_until(lambda: not_serving(server), 20, "the workers to stop taking connections")
    assert server.daemon.proc.poll() is None, "the server must wait for the request in flight"
    release.set()
    client.join(30)
    assert answers and answers[0].status_code == 202, answers and answers[0].text
    assert server.daemon.wait_exit(30) == 0

    task_uuid = answers[0].json()["task_uuid"]
    [task] = api_stack.records(kafka, api_stack.topics.task_topic(1), task_uuid)
    assert task["priority"] == 1
    # The queued status, acknowledged before the 202.
    assert [s["state"] for s in api_stack.records(kafka, api_stack.topics.status, task_uuid)] == ["queued"]
    assert len(server.daemon.events("api worker stopped")) == 2


def test_without_a_broker_a_submission_is_503_and_leaves_no_file(api_stack, sample):
    api_stack.bootstrap = f"127.0.0.1:{free_port()}"  # nothing listens there
    server = api_stack.start(kafka={"request_timeout_ms": 3000})
    response = server.upload(sample)
    assert response.status_code == 503, response.text
    assert "nothing was queued" in response.json()["error"] and response.headers["Retry-After"]
    wait_until(lambda: not api_stack.incoming(), 10, "the upload's temporary file to go")
    assert list(api_stack.spool.iterdir()) == []
    ready = server.get("/readyz")
    assert ready.status_code == 503 and "Kafka" in ready.json()["error"]
    assert server.get("/healthz").status_code == 200


def test_one_access_line_per_request_and_no_secret_in_the_log(public_api, sample):
    task_uuid = public_api.upload(sample).json()["task_uuid"]
    public_api.upload(sample, headers={"Authorization": "Bearer not-the-token"})
    public_api.post("/generate", json={}, auth=public_api.BASIC)
    public_api.post("/generate", json={}, auth=("old", "guess"))

    def access_lines():
        lines = [e for e in public_api.daemon.events("request") if e.get("task_uuid") == task_uuid]
        return lines or None
    [line] = wait_until(access_lines, 10, "the submission's access line")
    assert line["method"] == "POST" and line["path"] == "/v1/tasks" and line["status"] == 202
    assert line["duration_ms"] >= 0
    assert [e["task_uuid"] for e in public_api.daemon.events("task queued")].count(task_uuid) == 1

    text = public_api.daemon.log_text()
    basic = base64.b64encode(":".join(public_api.BASIC).encode()).decode()
    for secret in (public_api.TOKEN, "not-the-token", basic, ":".join(public_api.BASIC), "guess"):
        assert secret not in text, f"{secret!r} is in the log"


def test_without_tokens_it_warns_at_start_and_refuses_every_protected_request(api_stack, sample):
    server = api_stack.start(tokens=[])
    assert server.daemon.events("api.tokens is empty: every request but the health checks is refused")
    for token in ("", "t0k3n", "None"):
        response = server.upload(sample, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, response.text
    assert server.get("/healthz").status_code == 200


def test_a_spool_it_cannot_create_is_a_configuration_error(api_stack, tmp_path):
    (tmp_path / "file").write_text("not a directory")
    config = api_stack.write_config()
    config.write_text(config.read_text().replace(str(api_stack.spool), str(tmp_path / "file" / "spool")))
    server = api_stack.start(config=config, wait=False)
    assert server.daemon.wait_exit(30) == 78
    assert server.daemon.events("processor.spool_dir cannot be used")


def test_no_secret_reaches_the_log_even_at_debug(api_stack, sample):
    secrets = {"token": "tok-Secret-7", "basic": "old:basic-Secret-7", "link": "link-Secret-7",
               "sasl": "sasl-Secret-7", "forged_sig": "f" * 64}
    config = api_stack.write_config(kafka={"sasl_mechanism": "PLAIN", "sasl_plain_username": "uvrd",
                                           "sasl_plain_password": secrets["sasl"]},
                                    tokens=[secrets["token"]], basic_auth=[secrets["basic"]],
                                    link_secret=secrets["link"])
    server = api_stack.start(config, env={"UVRD_LOG_LEVEL": "DEBUG"})
    good = {"Authorization": f"Bearer {secrets['token']}"}
    task_uuid = server.upload(sample, headers=good).json()["task_uuid"]
    assert server.upload(sample, headers={"Authorization": "Bearer tok-Secret-7x"}).status_code == 401
    assert server.post("/generate", json={}, auth=("old", "basic-Secret-7x")).status_code == 401
    stem = server.get(f"/v1/tasks/{task_uuid}/stems/vocals?expires=9999999999&sig={secrets['forged_sig']}")
    assert stem.status_code == 403
    wait_until(lambda: len(server.daemon.events("request")) >= 4, 10, "the access lines")
    server.daemon.signal(signal.SIGTERM)
    assert server.daemon.wait_exit(30) == 0
    text = server.daemon.log_text()
    assert '"level": "debug"' in text, "the log is at DEBUG"
    basic = base64.b64encode(secrets["basic"].encode()).decode()
    for secret in [*secrets.values(), "tok-Secret-7x", "basic-Secret-7x", basic, "Secret-7"]:
        assert secret not in text, f"{secret!r} is in the log"


def test_a_full_spool_is_507_with_retry_after_and_keeps_nothing(api_stack, sample):
    with small_filesystem(api_stack.spool, 8) as spool:
        if spool is None:
            pytest.skip("mounting a small tmpfs needs root")
        server = api_stack.start()
        ballast = fill(spool)
        r = server.upload(sample)
        assert r.status_code == 507 and r.headers["Retry-After"].isdigit(), (r.status_code, r.text)
        assert "no room" in r.json()["error"]
        assert [p.name for p in spool.iterdir()] == [ballast.name], "no partial upload is left"
        ballast.unlink()
        assert server.upload(sample).status_code == 202, "room again, accepted again"
        server.daemon.signal(signal.SIGTERM)
        assert server.daemon.wait_exit(30) == 0


def public_url_warnings(server) -> list[dict]:
    return [e for e in server.daemon.log_events() if str(e.get("event")).startswith("api.public_url is not set")]


def without_public_url(config):
    config.write_text("\n".join(line for line in config.read_text().splitlines() if not line.startswith("public_url")) + "\n")
    return config


def test_without_public_url_links_follow_listen(api_stack, sample):
    server = api_stack.start(config=without_public_url(api_stack.write_config()))
    response = server.upload(sample)
    assert response.status_code == 202, response.text
    assert response.json()["status_url"] == f"{server.url}/v1/tasks/{response.json()['task_uuid']}"
    assert response.headers["Location"] == response.json()["status_url"]
    assert server.get("/openapi.json").json()["servers"] == [{"url": server.url}]
    assert not public_url_warnings(server)


def test_a_wildcard_listen_without_public_url_warns_and_names_this_host(api_stack, sample):
    config = without_public_url(api_stack.write_config())
    config.write_text(config.read_text().replace('listen = "127.0.0.1:', 'listen = "0.0.0.0:'))
    server = api_stack.start(config=config)
    port = server.url.rpartition(":")[2]
    [warning] = public_url_warnings(server)
    assert warning["level"] == "warning" and "set api.public_url" in warning["event"]
    response = server.upload(sample)
    assert response.status_code == 202, response.text
    assert response.json()["status_url"].startswith(f"http://{socket.gethostname()}:{port}/v1/tasks/")
