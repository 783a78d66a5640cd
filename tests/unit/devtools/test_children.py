"""LoggedProcess reads a child's JSON log as the child writes it."""

from __future__ import annotations

import sys
import textwrap

from support import wait_until
from devtools.children import LoggedProcess

# Writes a whole line, a line cut short, then (once told to through a file) the rest of it.
CHILD = textwrap.dedent("""
    import os, sys, time
    go = sys.argv[1]
    sys.stdout.write('{"event": "first"}\\nnot json\\n[1, 2]\\n{"event": "sec')
    sys.stdout.flush()
    while not os.path.exists(go):
        time.sleep(0.01)
    sys.stdout.write('ond"}\\n')
""")


def test_log_events_come_once_each_and_a_line_only_once_it_is_whole(tmp_path):
    go = tmp_path / "go"
    child = LoggedProcess([sys.executable, "-c", CHILD, str(go)], tmp_path / "child.log", env={})
    try:
        wait_until(lambda: child.log_text().endswith('"sec'), 30, "the cut-short line")
        assert child.log_events() == [{"event": "first"}], "only whole JSON objects, the cut line not yet"
        assert child.log_events() == [{"event": "first"}], "a second read adds nothing"
        go.touch()
        assert child.proc.wait(30) == 0
        assert child.log_events() == [{"event": "first"}, {"event": "second"}]
        assert [e["event"] for e in child.events("second")] == ["second"]
    finally:
        child.kill_all()
        child.close_log()
