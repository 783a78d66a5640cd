"""The fleet as an operator and a client see it: each processor's heartbeat on the workers topic,
served by ``GET /v1/workers`` and ``GET /v1/models``, with a real broker, the tiny model and the
api as a subprocess."""

from __future__ import annotations

import json
import signal
from urllib.parse import quote

import pytest
import requests
from scrape import listen as scrape_listen
from scrape import scrape
from separation_service import AUTH, SeparationService, submit
from support import wait_until

from uvrd import messages
from devtools import tinymodel

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(module_stack, model_dir):
    svc = SeparationService(module_stack, [tinymodel.install(model_dir)], model_dir, heartbeat_interval=1.0,
                            progress_interval=0.3)
    yield svc
    svc.close()


get = SeparationService.get  # get(service, path)


def one_worker(service) -> dict | None:
    workers = [w for w in get(service, "/v1/workers")["workers"] if w["alive"]]
    return workers[0] if len(workers) == 1 else None


def test_a_ready_processor_shows_as_an_idle_worker_holding_its_warm_model(service):
    worker = wait_until(lambda: (w := one_worker(service)) and w["state"] == "idle" and w, 60, "the idle worker")
    assert worker["device"] == "cpu" and worker["task"] is None and worker["pid"] == service.processor.proc.pid
    assert worker["execution_provider"] == "CPUExecutionProvider"  # where the model really runs
    # The same for monitoring, without a token: how many live workers run where.
    ready = requests.get(f"{service.url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["execution_providers"] == {"CPUExecutionProvider": 1}
    [model] = worker["models"]
    assert (model["model"], model["architecture"], model["warm"]) == (tinymodel.TINY_MODEL, "MDX", True)
    assert model["stems"] == ["instrumental", "vocals"]
    models = get(service, "/v1/models")
    [served] = models["models"]
    assert served == {"model": tinymodel.TINY_MODEL, "default": True, "architecture": "MDX",
                      "stems": ["instrumental", "vocals"], "loaded_on": [worker["worker"]], "warm": True}
    presets = {p["preset"]: p for p in models["ensemble_presets"]}
    assert presets and all(not p["served"] and len(p["models"]) >= 2 for p in presets.values())


def test_a_busy_worker_shows_its_task_and_progress(service, tmp_path):
    task_uuid = submit(service.url, tinymodel.write_sample(tmp_path / "long.wav", seconds=300), service.receiver.url)
    busy = wait_until(lambda: (w := one_worker(service)) and (w.get("task") or {}).get("progress", 0) > 0 and w,
                      120, "the worker busy with the task")
    assert busy["state"] == "busy" and busy["task"]["task_uuid"] == task_uuid
    # Cancelled rather than waited out: the worker frees itself as soon as its task ends, however it ends.
    cancelled = requests.delete(f"{service.url}/v1/tasks/{task_uuid}", headers=AUTH, timeout=30)
    assert cancelled.status_code == 202, cancelled.text
    idle = wait_until(lambda: (w := one_worker(service)) and w["state"] == "idle" and w, 120, "the worker idle again")
    assert idle["task"] is None


def test_the_metrics_count_what_the_service_did(service, tmp_path):
    # An earlier test's task is settled and its webhook delivered a moment after its worker is idle.
    def all_delivered() -> bool:
        processor, uploader = scrape(service.metrics["processor"]), scrape(service.metrics["uploader"])
        return (processor.value("uvrd_tasks_total") == processor.value("uvrd_tasks_accepted_total") ==
                uploader.value("uvrd_webhook_deliveries_total"))
    wait_until(all_delivered, 60, "every task accepted so far settled and delivered")
    before = {daemon: scrape(listen) for daemon, listen in service.metrics.items()}
    audio_seconds = 3.0
    service.separate(tinymodel.write_sample(tmp_path / "short.wav", seconds=audio_seconds))
    with open(tmp_path / "short.wav", "rb") as f:  # no 'audio' field: refused by the api
        refused = requests.post(f"{service.url}/v1/tasks", headers=AUTH, files={"sound": ("short.wav", f)}, timeout=30)
    assert refused.status_code == 400, refused.text
    after = {daemon: scrape(listen) for daemon, listen in service.metrics.items()}

    def grew(daemon: str, name: str, **labels) -> float:
        return after[daemon].value(name, **labels) - before[daemon].value(name, **labels)

    tiny_on_cpu = {"model": tinymodel.TINY_MODEL, "device": "cpu"}
    assert grew("api", "uvrd_api_tasks_total", outcome="queued") == 1
    assert grew("api", "uvrd_api_tasks_total", outcome="refused", reason="400") == 1
    assert grew("api", "uvrd_api_tasks_total") == 2
    assert grew("processor", "uvrd_tasks_accepted_total") == 1
    assert grew("processor", "uvrd_tasks_total", outcome="succeeded") == 1
    assert grew("processor", "uvrd_tasks_total") == 1, "nothing else settled"
    assert grew("processor", "uvrd_separation_seconds_count", **tiny_on_cpu) == 1
    took = grew("processor", "uvrd_separation_seconds_sum", **tiny_on_cpu)
    assert took > 0
    assert grew("processor", "uvrd_separation_seconds_per_audio_second_sum", **tiny_on_cpu) == \
        pytest.approx(took / audio_seconds)
    assert grew("uploader", "uvrd_webhook_deliveries_total", outcome="delivered") == 1
    assert grew("uploader", "uvrd_webhook_attempt_seconds_count", result="delivered") == 1
    assert grew("uploader", "uvrd_webhook_attempt_seconds_count") == 1, "one attempt, no retry"
    assert grew("processor", "uvrd_dead_letters_total") == grew("uploader", "uvrd_dead_letters_total") == 0
    # Nothing waits, once the uploader's commit is read back (as GET /v1/queues tells it, a second old at most).
    wait_until(lambda: (q := scrape(service.metrics["api"])).labelled("uvrd_queue_backlog_tasks", "priority") ==
               {p: 0 for p in "54321"} and q.value("uvrd_queue_backlog_results") == 0, 30, "empty queues")
    # A CPU engine reports no GPU memory rather than a made-up zero.
    assert after["processor"].labelled("uvrd_gpu_memory_used_bytes", "device") == {}
    assert after["processor"].value("uvrd_drain_elapsed_seconds") == 0
    assert after["processor"].value("uvrd_drain_window_seconds") == 60


def test_a_stopped_worker_leaves_the_list(service):
    wait_until(lambda: one_worker(service), 60, "the worker on the list")
    service.processor.signal(signal.SIGTERM)
    assert service.processor.wait_exit(60) == 0
    wait_until(lambda: get(service, "/v1/workers")["workers"] == [], 30, "the worker's goodbye")
    assert get(service, "/v1/models")["models"][0]["loaded_on"] == []


def test_a_model_a_task_names_is_loaded_for_it_and_the_least_recently_used_makes_room(module_stacks, tmp_path,
                                                                                      kafka):
    import json

    from uvrd.boards.status import progress_key

    stack = module_stacks("lru")
    models_dir = tmp_path / "models"
    a, b, c = (tinymodel.install(models_dir, name=f"UVRD-Tiny-{x}.onnx") for x in "ABC")
    svc = SeparationService(stack, [a, b, c], models_dir, heartbeat_interval=1.0, max_loaded_models=2)
    sample = tinymodel.write_sample(tmp_path / "s.wav", seconds=2)
    try:
        def held():
            worker = one_worker(svc)
            return sorted(m["model"] for m in worker["models"]) if worker else None

        wait_until(lambda: held() == [a.filename], 60, "the default model alone")
        svc.separate(sample, model=b.filename)
        wait_until(lambda: held() == [a.filename, b.filename], 30, "two models held")
        done = svc.separate(sample, model=c.filename)
        # Two at most: the default, used longest ago, went to make room.
        wait_until(lambda: held() == [b.filename, c.filename], 30, "the least recently used unloaded")
        assert [e["model"] for e in svc.processor.events("model unloaded to make room")] == [a.filename]
        steps = [json.loads(r.value)["step"] for r in kafka.read_all(stack.status)
                 if r.key == progress_key(done.task_uuid) and r.value is not None]
        assert f"loading model {c.filename}" in steps, steps
        assert svc.separate(sample).webhook["status"] == "success"  # the default comes back, B goes
        wait_until(lambda: held() == [a.filename, c.filename], 30, "the default loaded again")
    finally:
        svc.close()


def test_uvrd_status_shows_the_workers_the_queues_and_the_dead_letters(module_stacks, model_dir, tmp_path, kafka):
    import os
    import subprocess
    import sys

    from separation_service import TOKEN

    stack = module_stacks("status")
    svc = SeparationService(stack, [tinymodel.install(model_dir)], model_dir, heartbeat_interval=1.0)
    try:
        # A task the processor refuses (an unknown model) is one dead letter; with no hook, nothing more.
        began = messages.now_iso()
        refused = stack.task("/nowhere.wav", model="No-Such.onnx", hook_url=None)
        kafka.send(stack.tasks, refused)
        wait_until(lambda: get(svc, "/v1/queues")["dead_letters"] == 1, 60, "the dead letter")
        # The counts are at most a second old: wait for the task and its result to be committed.
        wait_until(lambda: (q := get(svc, "/v1/queues"))["results"]["end"] > 0 and q["results"]["backlog"] == 0
                   and all(t["backlog"] == 0 for t in q["tasks"]), 60, "the task and its result settled")
        wait_until(lambda: (w := one_worker(svc)) and w["state"] == "idle", 60, "the idle worker")
        processor_metrics = scrape(svc.metrics["processor"])
        assert processor_metrics.labelled("uvrd_tasks_total", "reason") == {"unknown_model": 1}
        assert processor_metrics.value("uvrd_tasks_total", outcome="refused") == 1
        assert processor_metrics.value("uvrd_tasks_accepted_total") == 0
        assert processor_metrics.labelled("uvrd_dead_letters_total", "stage") == {"processor": 1}
        assert processor_metrics.value("uvrd_dead_letters_total", reason="unknown_model") == 1
        env = {**os.environ, "UVRD_API_URL": svc.url, "UVRD_API_TOKEN": TOKEN}
        run = subprocess.run([sys.executable, "-m", "uvrd", "status"], capture_output=True, text=True, env=env,
                             timeout=60)
        assert run.returncode == 0, run.stderr
        out = run.stdout
        assert "workers: 1 alive" in out and tinymodel.TINY_MODEL in out and " idle " in out, out
        assert f"priority 3  {stack.tasks}" in out and "0 waiting" in out
        assert "dead letters: 1" in out and "tasks in flight: 0" in out
        print("\n" + out)
        queues = get(svc, "/v1/queues")
        assert [q["priority"] for q in queues["tasks"]] == [5, 4, 3, 2, 1]
        assert [q["end"] for q in queues["tasks"]] == [0, 0, 1, 0, 0]
        dead = subprocess.run([sys.executable, "-m", "uvrd", "dead-letters", "list"], capture_output=True, text=True,
                              env=env, timeout=60)
        assert dead.returncode == 0, dead.stderr
        assert dead.stdout.startswith("1 dead letters; 1 shown") and "processor" in dead.stdout
        assert "unknown model 'No-Such.onnx'" in dead.stdout and f"from {stack.tasks}/0/0" in dead.stdout
        assert get(svc, "/v1/dead-letters?error=UNKNOWN+MODEL")["dead_letters"][0]["stage"] == "processor"
        assert get(svc, "/v1/dead-letters?error=nothing-like-it") == {"count": 1, "dead_letters": []}
        # A time range: the letter was written during this test, not before it began nor after now.
        assert len(get(svc, f"/v1/dead-letters?since={quote(began)}&until={quote(messages.now_iso())}")
                   ["dead_letters"]) == 1
        assert get(svc, f"/v1/dead-letters?until={quote(began)}")["dead_letters"] == []
        late = subprocess.run([sys.executable, "-m", "uvrd", "dead-letters", "list", "--since", "2999-01-01"],
                              capture_output=True, text=True, env=env, timeout=60)
        assert late.returncode == 0 and late.stdout.startswith("1 dead letters; 0 shown"), late.stdout + late.stderr
        # One letter in full: the task message it copies, found by its coordinates or by its task.
        [letter] = get(svc, "/v1/dead-letters")["dead_letters"]
        for which in (f"{letter['partition']}/{letter['offset']}", refused["task_uuid"]):
            shown = subprocess.run([sys.executable, "-m", "uvrd", "dead-letters", "show", which, "--json"],
                                   capture_output=True, text=True, env=env, timeout=60)
            assert shown.returncode == 0, shown.stderr
            assert json.loads(shown.stdout)["record"] == refused
        nothing = subprocess.run([sys.executable, "-m", "uvrd", "dead-letters", "show", "0/999999"],
                                 capture_output=True, text=True, env=env, timeout=60)
        assert nothing.returncode == 2 and "HTTP 404: no dead letter at 0/999999" in nothing.stderr, nothing.stderr
        # A second processor of the deployment: both on the list, each with its own heartbeat.
        # Its own metrics port, as a per-GPU unit's instance number gives it one.
        second_metrics = scrape_listen()
        second = stack.start("processor", config=svc.config, env={"UVRD_PROCESSOR_METRICS_LISTEN": second_metrics})
        second.wait_ready(300)
        assert scrape(second_metrics).value("uvrd_tasks_total") == 0
        assert scrape(svc.metrics["processor"]).value("uvrd_tasks_total") == 1
        both = wait_until(lambda: (w := [x for x in get(svc, "/v1/workers")["workers"] if x["alive"]]) and len(w) == 2
                          and w, 60, "two workers alive")
        assert {w["pid"] for w in both} == {svc.processor.proc.pid, second.proc.pid}
        two = subprocess.run([sys.executable, "-m", "uvrd", "status"], capture_output=True, text=True, env=env,
                             timeout=60)
        assert two.returncode == 0 and "workers: 2 alive" in two.stdout, two.stdout
        assert all(w["worker"] in two.stdout for w in both)
        second.signal(signal.SIGTERM)
        assert second.wait_exit(60) == 0
        svc.processor.signal(signal.SIGTERM)
        assert svc.processor.wait_exit(60) == 0
        gone = subprocess.run([sys.executable, "-m", "uvrd", "status"], capture_output=True, text=True, env=env,
                              timeout=60)
        assert gone.returncode == 1 and "workers: 0 alive" in gone.stdout
    finally:
        svc.close()
