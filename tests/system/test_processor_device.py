"""The GPU check as an operator meets it: a processor expected to run on a GPU that finds its model on
the CPU exits 78 (RestartPreventExitStatus) with one line saying why; one free to use the CPU says
where its model runs."""

from __future__ import annotations

import json

import pytest

from uvrd.config import EX_CONFIG

pytestmark = pytest.mark.slow


def test_a_processor_expecting_cuda_on_a_cpu_only_host_exits_78_with_one_clear_line(stack):
    p = stack.start(config=stack.write_config(device="cuda"))
    assert p.wait_exit(300) == EX_CONFIG, p.log_text()[-3000:]
    assert "READY=1" not in p.notify.lines()
    [refused] = p.events("separation engine could not run")
    assert refused["error"].startswith('processor.device is "cuda" but ') and "runs on CPUExecutionProvider" in \
        refused["error"], refused
    assert "\n" not in refused["error"]


def test_a_processor_on_auto_says_where_its_model_runs(stack):
    p = stack.start(config=stack.write_config(device="auto"))
    p.wait_ready(300)
    [ready] = p.events("processor ready")
    assert ready["execution_provider"] == "CPUExecutionProvider", json.dumps(ready)
