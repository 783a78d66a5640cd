"""Fixtures booting a real systemd: a cached Debian root, and containers on fresh copies of it."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from container import Container, booted
from deb_build import DebBuildFailed, built_deb
from installed import GPU_UNITS, configure, make_topics
from installed_layer import installed_box, installed_layer
from rootfs import RootfsUnavailable, cached_root, missing_host_debs
from support import KafkaView, wait_until
from uvrd.config import TopicsConfig


@pytest.fixture(scope="session")
def uvrd_deb(debian_root) -> Path:
    """The package of this tree (deb_build.py): built once per change of the tree."""
    try:
        return built_deb()
    except DebBuildFailed as e:
        pytest.fail(f"make deb failed:\n{e}")


def pytest_collection_modifyitems(items):
    # The first test to need the Debian root builds it (debootstrap, about 3 minutes), and the
    # package tests build the package: longer than the suite's default per-test limit.
    for item in items:
        if "debian_root" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(3600))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test on an installed container carries its uvrd units' journal: on CI that is all
    there is to read afterwards."""
    report = yield
    args = getattr(item, "funcargs", {})
    # The box itself, or a module's stack around one (test_single_host's single_host).
    box = args.get("box") or next((a.box for a in args.values() if isinstance(getattr(a, "box", None), Container)),
                                  None)
    if report.failed and isinstance(box, Container) and box.pid1 is not None:
        try:
            # Without kafka-python's connection lines: a broker away for a while would fill the tail.
            journal = box.run("sh", "-c", "journalctl --no-pager --boot --output=short-monotonic --unit='uvrd*' "
                              "| grep -v '\"logger\": \"kafka\\.' | tail -n 300", check=False, timeout=30).stdout
        except Exception as e:  # the report must not hide the failure it reports
            journal = f"(no journal: {e!r})"
        report.sections.append((f"uvrd journal ({call.when})", journal))
    return report


@pytest.fixture(scope="session")
def debian_root() -> Path:
    if os.geteuid() != 0:
        pytest.skip("booting a container needs root")
    if missing := missing_host_debs():
        pytest.skip(f"missing host packages {missing}: run `python tests/system/packaging/rootfs.py host-deps`")
    try:
        root = cached_root()
    except RootfsUnavailable as e:
        pytest.skip(f"no Debian root: {e}")
    _check_nspawn(root)
    return root


def _check_nspawn(root: Path) -> None:
    """A one-command container, no boot: says cheaply whether nspawn can run on this host at all."""
    probe = subprocess.run(["systemd-nspawn", "--quiet", "--directory", str(root), "--register=no", "--keep-unit",
                            "--volatile=overlay", "--console=pipe", "/bin/true"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, check=False)
    if probe.returncode != 0:
        pytest.skip(f"systemd-nspawn cannot run here: {(probe.stderr or probe.stdout).strip()[-500:]}")


@pytest.fixture(scope="session")
def uvrd_installed(debian_root, uvrd_deb) -> Path | None:
    """The package installed on the root once, as a layer a container stacks over it
    (installed_layer.py); None where this host has no overlays."""
    return installed_layer(debian_root, uvrd_deb)


@pytest.fixture
def container(debian_root, tmp_path) -> Iterator[Container]:
    """A freshly booted container all the test's own, powered off afterwards: a boot takes under a second."""
    with booted(debian_root, tmp_path) as box:
        yield box


@pytest.fixture(scope="module")
def box(debian_root, uvrd_deb, uvrd_installed, tmp_path_factory):
    """One container with the package installed, for the module."""
    with installed_box(debian_root, uvrd_deb, uvrd_installed, tmp_path_factory.mktemp("pkg")) as container:
        yield container


@pytest.fixture
def topics(broker, request) -> TopicsConfig:
    return make_topics(broker, request)


@pytest.fixture
def two_gpus(box, broker, request):
    """Both instances running in one group on a two-partition task topic, one partition each."""
    topics = make_topics(broker, request, task_partitions=2)
    group = f"pkg-{uuid.uuid4().hex[:8]}"
    configure(box, broker, topics, group)
    box.systemctl("start", *GPU_UNITS, timeout=300)
    kafka = KafkaView(broker.bootstrap)

    def split() -> bool:
        owned = []
        for unit in GPU_UNITS:
            assigned = [json.loads(e["MESSAGE"]) for e in box.journal(unit)
                        if '"partitions assigned"' in e["MESSAGE"]]
            owned.append({p for p in assigned[-1]["partitions"] if p.startswith(topics.tasks + "/")}
                         if assigned else set())
        return all(len(o) == 1 for o in owned) and owned[0] != owned[1]

    try:
        wait_until(split, 60, "one task partition for each instance")
        yield topics, group, kafka
    finally:
        box.systemctl("stop", *GPU_UNITS, timeout=700)
        kafka.close()
