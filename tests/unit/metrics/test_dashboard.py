"""The Grafana dashboard in the repository imports as is and graphs only metrics the daemons expose:
a renamed metric fails here, not as an empty panel in production."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

# Each module registers its metrics when imported.
import uvrd.metrics.api
import uvrd.metrics.dead_letters
import uvrd.metrics.drain
import uvrd.metrics.processor
import uvrd.metrics.uploader  # noqa: F401  (registers its metrics; nothing else of it is used here)
from uvrd.metrics.queues import QueueCollector

DASHBOARD = Path(__file__).parents[3] / "docs" / "grafana" / "uvrd-dashboard.json"
# The series each kind of metric family is exposed as.
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def exposed() -> set[str]:
    families = [f for f in REGISTRY.collect() if f.name.startswith("uvrd_")] + QueueCollector(None).describe()
    return {f.name + suffix for f in families for suffix in SUFFIXES[f.type]}


def test_every_metric_a_panel_graphs_is_one_the_daemons_expose():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    used = {name for e in exprs for name in re.findall(r"\buvrd_[a-z0-9_]+", e)}
    assert used and used <= exposed(), sorted(used - exposed())


def test_it_imports_with_a_prometheus_data_source_chosen_at_import():
    dashboard = json.loads(DASHBOARD.read_text())
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["uid"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
