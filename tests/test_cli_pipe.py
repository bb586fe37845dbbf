"""A closed stdout (``dhan inspect DIR | head -1``) ends the command quietly, without a traceback."""

from __future__ import annotations

import subprocess
import sys


def test_closed_stdout_is_not_a_traceback(tmp_path) -> None:
    from conftest import make_tiny_data

    # thousands of lines: more than a pipe buffer holds, so the writer really meets the closed pipe
    data = make_tiny_data(num_users=400, num_items=60).save(tmp_path / "ds")
    cmd = [sys.executable, "-m", "dhan", "inspect", str(data), "--split", "train", "--limit", "100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # the reader goes away after one line
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err
