"""The systemd units as shipped, with the two processor units made from one source.

``uvrd-processor@.service`` (one worker per GPU) is the source; ``uvrd-processor.service`` (one
worker, every GPU) is made from it by three changes, so that the two cannot drift apart:

- its Description does not name a GPU;
- it sets no CUDA_VISIBLE_DEVICES (it sees every card);
- its SyslogIdentifier has no instance.

``python3 packaging/systemd/units.py DIR`` writes every shipped unit into DIR (the Debian build
installs them from there).  Standard library only: it runs in the package build.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TEMPLATE = "uvrd-processor@.service"
SINGLE = "uvrd-processor.service"
SHIPPED_SUFFIXES = (".service", ".target")


def single_processor_unit(template: str) -> str:
    """uvrd-processor.service, from the text of uvrd-processor@.service."""
    lines = template.splitlines(keepends=True)
    out = []
    for i, line in enumerate(lines):
        if line.startswith("Environment=CUDA_VISIBLE_DEVICES="):
            if out and out[-1].startswith("#") and "GPU" in out[-1]:
                out.pop()  # its comment goes with it
            continue
        if line.startswith("Description="):
            line = _without(line, " on GPU %i")
        elif line.startswith("SyslogIdentifier="):
            line = _without(line, "@%i")
        out.append(line)
    text = "".join(out)
    if "%i" in text:
        raise ValueError(f"{TEMPLATE} uses %i where {SINGLE} cannot follow: {text[text.index('%i') - 60:][:120]!r}")
    return text


def _without(line: str, part: str) -> str:
    if part not in line:
        raise ValueError(f"{TEMPLATE}: expected {part!r} in {line.strip()!r}")
    return line.replace(part, "")


def write_units(directory: Path) -> list[Path]:
    """Every shipped unit into *directory*; the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(HERE.iterdir()):
        if source.suffix in SHIPPED_SUFFIXES:
            written.append(Path(shutil.copy(source, directory / source.name)))
    single = directory / SINGLE
    single.write_text(single_processor_unit((HERE / TEMPLATE).read_text()))
    written.append(single)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIRECTORY")
    for path in write_units(Path(sys.argv[1])):
        print(path)
