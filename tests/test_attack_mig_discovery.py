"""Attacks on what a migration file declares and on which code runs.

- ``RESUMABLE = "False"`` (a string, as YAML habits write it) was truthy: a migration its author
  meant as *not* resumable was re-run by the next ``up`` on its own after a kill. The same for
  ``REVERSIBLE = "no"`` (``down`` ran it) and ``TRANSACTIONAL``. Flags must be booleans.
- The file was checksummed from its text but run through the import system, which reuses a
  ``__pycache__`` copy when an edit keeps the file's size and mtime second: the changelog then
  records the checksum of code that never ran (and an edited bundled file could borrow the
  BUNDLED_RESUMABLE entry of the text it replaced). The text checksummed is now the text run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.migration_fixtures import write_migration
from userfiles_db.migrate import discover
from userfiles_db.migrate.discovery import checksum, new_migration
from userfiles_db.migrate.errors import ConfigError

UP_DOWN = """
def up(db: Any) -> None:
    pass

def down(db: Any) -> None:
    pass
"""


@pytest.mark.parametrize(
    ("flag", "value"),
    [("RESUMABLE", '"False"'), ("REVERSIBLE", '"no"'), ("TRANSACTIONAL", "1"), ("RESUMABLE", "0")],
)
def test_a_flag_that_is_not_a_boolean_is_refused(tmp_path: Path, flag: str, value: str) -> None:
    write_migration(tmp_path, "0001_flag", f"{flag} = {value}\n" + UP_DOWN)
    with pytest.raises(ConfigError, match=f"{flag} must be True or False, got "):
        discover(tmp_path)


def test_boolean_flags_still_load(tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_flag", "RESUMABLE = True\nREVERSIBLE = False\n" + UP_DOWN)
    (migration,) = discover(tmp_path)
    assert (migration.module.RESUMABLE, migration.reversible) == (True, False)


def test_the_cli_exits_2_on_a_string_flag(tmp_path: Path) -> None:
    write_migration(tmp_path / "migrations", "0001_flag", 'RESUMABLE = "False"\n' + UP_DOWN)
    done = subprocess.run(
        [sys.executable, "-m", "userfiles_db.cli", "--migrations", "migrations", "--uri",
         "mongodb://127.0.0.1:1", "status", "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "CI": "1"},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "RESUMABLE must be True or False" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_text_checksummed_is_the_text_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", False)  # as a developer's machine does
    path = write_migration(tmp_path, "0001_value", 'VALUE = "aaa"\n' + UP_DOWN)
    (first,) = discover(tmp_path)
    assert first.module.VALUE == "aaa"
    stat = path.stat()
    # An edit that keeps the size, within the same mtime second (a quick fix, a checkout).
    path.write_text(path.read_text().replace('"aaa"', '"bbb"'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    (second,) = discover(tmp_path)
    assert second.checksum == checksum(path.read_text())
    assert second.checksum != first.checksum
    assert second.module.VALUE == "bbb"  # not the cached bytecode of the text before the edit


def test_new_after_9999_refuses_instead_of_writing_a_file_that_breaks_every_command(tmp_path: Path) -> None:
    write_migration(tmp_path, "9999_always_last", UP_DOWN)
    with pytest.raises(ConfigError, match="no migration number is left after 9999"):
        new_migration(tmp_path, "next", "2026-11-25T00:00:00+00:00")
    assert [p.name for p in tmp_path.glob("*.py")] == ["9999_always_last.py"]
    assert [m.id for m in discover(tmp_path)] == ["9999_always_last"]
