"""Attack: ``--json`` promises one JSON object on stdout "also when the command fails"; a usage
error (a misspelled flag, a bad value, a bad group option) printed click's usage text only, so a
pipeline parsing stdout got nothing. Run as the console script runs (``main``), in a process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    (["up", "--json", "--bogus"], "No such option '--bogus'"),
    (["--log-format", "xml", "status", "--json"], "Invalid value for '--log-format'"),
    (["history", "--limit", "0", "--json"], "Invalid value for '--limit'"),
    (["down", "--steps", "x", "--json"], "Invalid value for '--steps'"),
    (["--uri", "mongodb://u:s3cr3tpw@h/", "stamp", "--json"], "Missing argument 'ID'"),
]


@pytest.mark.parametrize(("args", "error"), CASES)
def test_usage_error_with_json_is_one_object_on_stdout(tmp_path: Path, args: list[str], error: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "userfiles_db.cli", *args], cwd=tmp_path, capture_output=True,
        text=True, timeout=60, env={**os.environ, "CI": "1"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    data = json.loads(done.stdout)
    assert data == {"ok": False, "exit_code": 2, "error": data["error"]}
    assert error in data["error"]
    assert "Usage:" in done.stderr  # the human text still goes to stderr
    assert "s3cr3tpw" not in done.stdout + done.stderr


def test_without_json_stdout_stays_empty_and_help_and_version_exit_0(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "userfiles_db.cli", *args], cwd=tmp_path, capture_output=True,
            text=True, timeout=60, env={**os.environ, "CI": "1"},
        )  # fmt: skip

    done = run("up", "--bogus")
    assert (done.returncode, done.stdout) == (2, "")
    assert run("--version").returncode == 0
    assert run("up", "--help").returncode == 0
