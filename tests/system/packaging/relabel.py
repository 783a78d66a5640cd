"""A built .deb relabelled as another version, for upgrade tests.

Only the control member is rewritten; the multi-GB data member is copied
byte for byte into the new archive, so the result costs one file's space.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

AR_MAGIC = b"!<arch>\n"


def relabel(deb: Path, version: str, target: Path) -> Path:
    control = _control_with_version(deb, version)
    with open(deb, "rb") as src, open(target, "wb") as out:
        if src.read(len(AR_MAGIC)) != AR_MAGIC:
            raise ValueError(f"{deb} is not an ar archive")
        out.write(AR_MAGIC)
        while header := src.read(60):
            name, size = header[:16].rstrip(b" /"), int(header[48:58])
            if name.startswith(b"control.tar"):
                src.seek(size + size % 2, io.SEEK_CUR)
                _write_member(out, b"control.tar", control)
                continue
            out.write(header)
            shutil.copyfileobj(_Limited(src, size + size % 2), out, 1 << 20)
    return target


def _control_with_version(deb: Path, version: str) -> bytes:
    # dpkg-deb decompresses whatever compression the member has; dpkg reads a plain control.tar.
    raw = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(raw)) as old, tarfile.open(fileobj=out, mode="w",
                                                                     format=tarfile.GNU_FORMAT) as new:
        for info in old.getmembers():
            data = old.extractfile(info).read() if info.isfile() else None
            if info.name.lstrip("./") == "control":
                data = re.sub(rb"(?m)^Version: .*$", b"Version: " + version.encode(), data)
                info.size = len(data)
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _write_member(out, name: bytes, data: bytes) -> None:
    out.write(b"%-16s%-12d%-6d%-6d%-8s%-10d`\n" % (name, 0, 0, 0, b"100644", len(data)))
    out.write(data + (b"\n" if len(data) % 2 else b""))


class _Limited(io.RawIOBase):
    """The next *size* bytes of *f*."""

    def __init__(self, f, size: int):
        self.f, self.left = f, size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.f.readinto(memoryview(buffer)[:min(len(buffer), self.left)]) if self.left else 0
        self.left -= n
        return n
