"""Attacks on the config file a hostile or broken checkout can hold.

A ``migrate.yaml`` of deeply nested brackets (well under the 64 KiB cap) made the YAML parser
overflow Python's recursion limit: a ``RecursionError`` traceback instead of exit 2. The TOML
reader already turned it into a config error; both are checked here, with the other hostile
shapes (a Python tag, an alias bomb, a key given twice, an unknown key) that held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NEST = 20_000
FILES = {
    "deep_yaml": ("migrate.yaml", "db: " + "[" * NEST + "]" * NEST + "\n", "nested too deeply"),
    "deep_yaml_map": ("migrate.yaml", "db: " + "{a: " * 9000 + "1" + "}" * 9000 + "\n", "not valid YAML"),
    "deep_toml": (
        "pyproject.toml",
        "[tool.userfiles_db]\ndb = " + "[" * NEST + "]" * NEST + "\n",
        "not valid TOML",
    ),
    "python_tag": ("migrate.yaml", 'db: !!python/object/apply:os.system ["echo x"]\n', "not valid YAML"),
    "alias_bomb": ("migrate.yaml", "a: &a [x, x]\nb: &b [*a, *a]\ndb: [*b, *b]\n", "aliases"),
    "twice": ("migrate.yaml", "db: a\ndb: b\n", "given twice"),
    "unknown": ("migrate.yaml", "dbb: bot\n", "unknown setting(s) ['dbb']"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_a_hostile_config_file_is_exit_2_without_a_traceback(tmp_path: Path, case: str) -> None:
    name, text, error = FILES[case]
    (tmp_path / name).write_text(text)
    assert len(text.encode()) < 64 * 1024
    done = subprocess.run(
        [sys.executable, "-m", "userfiles_db.cli", "--uri", "mongodb://127.0.0.1:1", "status", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ, "CI": "1"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    data = json.loads(done.stdout)
    assert data["exit_code"] == 2
    assert error in data["error"]
