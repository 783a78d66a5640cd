"""The shipped systemd units: valid, hardened, and saying what the daemons rely on."""

from __future__ import annotations

import difflib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SOURCES = Path(__file__).resolve().parents[3] / "packaging" / "systemd"
sys.path.insert(0, str(SOURCES))
import units as shipped_units  # noqa: E402  (packaging/systemd/units.py: not a package)
SERVICES = ["uvrd-processor.service", "uvrd-processor@0.service", "uvrd-uploader.service", "uvrd-api.service",
            "uvrd-broker.service"]

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory) -> Path:
    """The units as installed, with a template instance to check the template through."""
    d = tmp_path_factory.mktemp("units")
    shipped_units.write_units(d)
    (d / "uvrd-processor@0.service").symlink_to("uvrd-processor@.service")
    return d


def settings(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("unit", SERVICES)
def test_exposure_is_at_most_2(unit_dir, unit):
    report = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", unit],
                            cwd=unit_dir, capture_output=True, text=True)
    assert report.returncode == 0, report.stdout[-2000:] + report.stderr


def test_every_unit_verifies_with_the_real_uvrd_binary(unit_dir, tmp_path):
    """verify checks ExecStart's binary: give /usr/bin/uvrd (ours) through an overlay in a private mount namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    (tmp_path / "upper").mkdir()
    (tmp_path / "work").mkdir()
    (tmp_path / "upper" / "uvrd").symlink_to(Path(sys.executable).parent / "uvrd")
    script = (f"mount -t overlay overlay -o lowerdir=/usr/bin,upperdir={tmp_path}/upper,workdir={tmp_path}/work "
              f"/usr/bin && systemd-analyze verify --man=no {' '.join(SERVICES)} uvrd.target")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=unit_dir, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr


@pytest.mark.parametrize("unit", ["uvrd-processor.service", "uvrd-processor@.service", "uvrd-uploader.service",
                                  "uvrd-api.service", "uvrd-broker.service"])
def test_lifecycle_settings_the_daemons_rely_on(unit_dir, unit):
    s = settings(unit_dir / unit)
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["KillMode"] == ["mixed"], "SIGTERM to the main process only; it ends its children"
    assert s["Restart"] == ["on-failure"] and s["RestartPreventExitStatus"] == ["78"]
    assert s["User"] == ["uvrd"] and "TimeoutStopSec" in s and "SyslogIdentifier" in s
    assert s["ExecStart"][0].startswith("/usr/bin/uvrd ")
    assert "WatchdogSec" in s


def test_the_api_may_hold_every_workers_connections(unit_dir):
    from uvrd.api.server import FD_MARGIN, WORKER_CONNECTIONS

    [limit] = settings(unit_dir / "uvrd-api.service")["LimitNOFILE"]
    assert int(limit) >= WORKER_CONNECTIONS + FD_MARGIN


def test_processor_reaches_the_gpu_through_device_nodes_only(unit_dir):
    for unit in ("uvrd-processor.service", "uvrd-processor@.service"):
        s = settings(unit_dir / unit)
        assert s["DevicePolicy"] == ["closed"] and "PrivateDevices" not in s
        assert {v.split()[0] for v in s["DeviceAllow"]} == {
            "char-nvidiactl", "char-nvidia-uvm", "char-nvidia-frontend", "char-nvidia-caps"}
        assert s["MemoryDenyWriteExecute"] == ["false"]
    assert "CUDA_VISIBLE_DEVICES=%i" in settings(unit_dir / "uvrd-processor@.service")["Environment"]


def test_processor_keeps_its_numba_cache_where_it_may_write_and_systemd_keeps_it(unit_dir):
    """ProtectSystem=strict leaves the venv read-only: numba's cache goes to the unit's CacheDirectory."""
    for unit in ("uvrd-processor.service", "uvrd-processor@.service"):
        s = settings(unit_dir / unit)
        [cache] = [v.partition("=")[2] for v in s["Environment"] if v.startswith("NUMBA_CACHE_DIR=")]
        assert cache in {f"/var/cache/{d}" for line in s["CacheDirectory"] for d in line.split()}, unit


def test_the_two_processor_units_differ_only_in_what_a_gpu_instance_needs(unit_dir):
    """One source: the single unit is the template less its GPU, so a setting added to one is in both."""
    single = (unit_dir / "uvrd-processor.service").read_text().splitlines()
    template = (unit_dir / "uvrd-processor@.service").read_text().splitlines()
    changed = [line for line in difflib.ndiff(single, template) if line[:1] in "+-"]
    assert changed == [
        "- Description=uvrd separation processor",
        "+ Description=uvrd separation processor on GPU %i",
        "+ # One worker per GPU: each sees only its own card, and fences only its own zombie.",
        "+ Environment=CUDA_VISIBLE_DEVICES=%i",
        "- SyslogIdentifier=uvrd-processor",
        "+ SyslogIdentifier=uvrd-processor@%i",
    ]
    assert not (shipped_units.HERE / "uvrd-processor.service").exists(), "made at build time, not kept beside its source"
