"""Engine logic that needs no server (or only mongomock): discovery, checksums, history, config."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.migration_fixtures import marker_migration, write_migration
from userfiles_db.migrate import (
    ConfigError,
    EngineOptions,
    InterruptedMigration,
    InvalidHistory,
    checksum,
    discover,
    new_migration,
    status,
)
from userfiles_db.migrate.config import bundled_migrations, redact
from userfiles_db.migrate.engine import _check_history


def test_bundled_migrations_are_discovered_in_order() -> None:
    assert [m.id for m in discover(bundled_migrations())] == [
        "0001_create_user_files",
        "0002_adopt_legacy_records",
        "0003_enable_ttl",
        "0004_enforce_validator",
    ]
    assert all(m.title and m.reversible and not m.transactional for m in discover(bundled_migrations()))


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"1_short.py": '"""x"""\ndef up(db): pass\ndef down(db): pass\n'}, "named NNNN_slug.py"),
        ({"0001_Upper.py": '"""x"""\ndef up(db): pass\ndef down(db): pass\n'}, "named NNNN_slug.py"),
        ({"0001_a.py": '"""x"""\ndef up(db): pass\ndef down(db): pass\n',
          "0001_b.py": '"""x"""\ndef up(db): pass\ndef down(db): pass\n'}, "also used by 0001_a.py"),
        ({"0001_a.py": "def up(db): pass\ndef down(db): pass\n"}, "starts with a docstring"),
        ({"0001_a.py": '"""x"""\ndef up(db): pass\n'}, "defines no down"),
        ({"0001_a.py": '"""x"""\nimport not_a_module\n'}, "failed to import: ModuleNotFoundError"),
    ],
)  # fmt: skip
def test_bad_migration_files_are_named(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=message):
        discover(tmp_path)


def test_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        discover(tmp_path / "nope")


def test_checksums_ignore_line_endings_and_trailing_space_only() -> None:
    text = '"""Doc."""\ndef up(db):\n    pass\n'
    assert checksum(text) == checksum(text.replace("\n", "\r\n")) == checksum(text + "\n\n")
    assert checksum(text) == checksum(text.replace("pass", "pass   "))
    assert checksum(text) != checksum(text.replace("    pass", "  pass"))
    assert checksum(text) != checksum(text + "# note\n")


def test_new_migration_numbers_after_the_highest(tmp_path: Path) -> None:
    assert new_migration(tmp_path, "first", "now").name == "0001_first.py"
    marker_migration(tmp_path, "0041_other")
    path = new_migration(tmp_path, "next_one", "now")
    assert path.name == "0042_next_one.py"
    assert [m.id for m in discover(tmp_path)][-1] == "0042_next_one"  # the template loads
    with pytest.raises(ConfigError, match="slug"):
        new_migration(tmp_path, "Has Spaces", "now")


def _record(db: Database[Any], migration_id: str, state: str, sum_: str = "x") -> None:
    db["migrations_changelog"].insert_one(
        {"_id": migration_id, "state": state, "checksum": sum_, "applied_at": dt.datetime(2026, 1, 1),
         "started_at": dt.datetime(2026, 1, 1), "host": "h", "run_id": "r"}
    )  # fmt: skip


def test_status_classifies_every_migration(mock_db: Database[Any], tmp_path: Path) -> None:
    for stem in ("0001_a", "0002_b", "0003_c", "0004_d"):
        marker_migration(tmp_path, stem)
    migrations = discover(tmp_path)
    sums = {m.id: m.checksum for m in migrations}
    _record(mock_db, "0001_a", "applied", sums["0001_a"])
    _record(mock_db, "0003_c", "applied", "edited")
    _record(mock_db, "0005_gone", "applied")
    found = status(mock_db, migrations, EngineOptions())
    assert [(e.id, e.state) for e in found.entries] == [
        ("0001_a", "applied"), ("0002_b", "pending"), ("0003_c", "applied"), ("0004_d", "pending"),
        ("0005_gone", "applied"),
    ]  # fmt: skip
    assert [e.id for e in found.out_of_order] == ["0002_b", "0004_d"]
    assert [e.id for e in found.changed] == ["0003_c"]
    assert [e.id for e in found.applied if e.missing_file] == ["0005_gone"]
    with pytest.raises(InvalidHistory, match="0005_gone"):
        _check_history(found, allow_changed=False, allow_out_of_order=False, resume=False)
    assert found.to_dict()["current"] == "0005_gone"


def test_interrupted_runs_block_with_what_to_do(mock_db: Database[Any], tmp_path: Path) -> None:
    marker_migration(tmp_path, "0001_a")
    _record(mock_db, "0001_a", "applying")
    found = status(mock_db, discover(tmp_path), EngineOptions())
    with pytest.raises(InterruptedMigration, match=r"0001_a: applying since .* on host h \(run r\)"):
        _check_history(found, allow_changed=False, allow_out_of_order=False, resume=False)
    _check_history(found, allow_changed=False, allow_out_of_order=False, resume=True)


def test_history_rules_name_the_overrides(mock_db: Database[Any], tmp_path: Path) -> None:
    write_migration(tmp_path, "0001_a", "def up(db: Any) -> None: ...\ndef down(db: Any) -> None: ...\n")
    marker_migration(tmp_path, "0002_b")
    _record(mock_db, "0001_a", "applied", "old")
    found = status(mock_db, discover(tmp_path), EngineOptions())
    with pytest.raises(InvalidHistory, match=r"0001_a\.py.*--accept-changed"):
        _check_history(found, allow_changed=False, allow_out_of_order=False, resume=False)


def test_engine_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="transactions must be one of"):
        EngineOptions(transactions="maybe")
    with pytest.raises(ConfigError, match="lock_lease_seconds"):
        EngineOptions(lock_lease_seconds=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mongodb://bot:pw@host/db", "mongodb://bot:***@host/db"),
        ("mongodb+srv://bot:p%40ss@cluster.example/db?x=1", "mongodb+srv://bot:***@cluster.example/db?x=1"),
        ("mongodb://host/db", "mongodb://host/db"),
    ],
)  # fmt: skip
def test_passwords_are_redacted(text: str, expected: str) -> None:
    assert redact(f"see {text} now") == f"see {expected} now"


def test_redact_also_masks_the_bare_password() -> None:
    uri = "mongodb://bot:hunter22@localhost:1/"
    assert redact("auth failed for hunter22", uri) == "auth failed for ***"


def test_progress_is_shown_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from userfiles_db import cli

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    cli._progress("convert", 5, 10)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    cli._progress("convert", 5, 10)
    cli._progress("convert", 10, 10)
    assert capsys.readouterr().err == "\r  convert: 5/10 records\r  convert: 10/10 records\n"
