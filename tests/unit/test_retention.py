import os
import time

from uvrd.storage.retention import sweep


def test_only_entries_past_retention_go(tmp_path):
    out = tmp_path / "output"
    (out / "old-task").mkdir(parents=True)
    (out / "old-task" / "vocals.flac").write_bytes(b"x")
    (out / "new-task").mkdir()
    (out / ".attempts").mkdir()
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "orphan.wav").write_bytes(b"x")
    (spool / "fresh.wav").write_bytes(b"x")
    week_ago = time.time() - 8 * 86400
    for p in (out / "old-task", out / ".attempts", spool / "orphan.wav"):
        os.utime(p, (week_ago, week_ago))
    assert sweep([out, spool, tmp_path / "missing"], 7 * 86400, keep=frozenset({".attempts"})) == 2
    assert sorted(os.listdir(out)) == [".attempts", "new-task"] and os.listdir(spool) == ["fresh.wav"]
