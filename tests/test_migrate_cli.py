"""migrate.py: exact output and exit codes (CliRunner), against the real server."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pymongo.database import Database

from tests.migration_fixtures import marker_migration, migrations_copy
from userfiles_db.cli import State, cli
from userfiles_db.local_server import LocalMongod, free_port

BUNDLED_IDS = [
    "0001_create_user_files",
    "0002_adopt_legacy_records",
    "0003_enable_ttl",
    "0004_enforce_validator",
]


@pytest.fixture
def run(mongod: LocalMongod, real_db: Database[Any], tmp_path: Path) -> Any:
    """Invoke migrate.py against the test database, with a clean environment and cwd."""

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        environ = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name} if env is None else env
        state = State(environ=environ, cwd=tmp_path)
        return CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False)

    return invoke


def test_up_status_check_down(run: Any, real_db: Database[Any]) -> None:
    result = run("status", "--check")
    assert result.exit_code == 3, result.output
    assert result.output.splitlines()[-1] == f"Database {real_db.name}: 0 applied, 4 pending."
    assert real_db.list_collection_names() == []  # read-only

    result = run("up")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-2:] == [
        "Applied 4 migration(s).",
        f"Database {real_db.name}: 4 applied, 0 pending.",
    ]

    result = run("status", "--check")
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.output.splitlines()[:4]] == [
        ["applied", i] for i in BUNDLED_IDS
    ]

    result = run("check")
    assert (result.exit_code, result.output) == (
        0, "No drift: the collection matches the declared schema.\n"
    )  # fmt: skip

    result = run("up")
    assert (result.exit_code, result.output) == (
        0, f"Nothing to apply: the database is up to date.\nDatabase {real_db.name}: 4 applied, 0 pending.\n"
    )  # fmt: skip

    result = run("down", "--to", "base")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "Undid 4 migration(s)."


def test_status_json(run: Any) -> None:
    run("up", "--to", "0002_adopt_legacy_records")
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [a["id"] for a in data["applied"]] == BUNDLED_IDS[:2]
    assert all(len(a["checksum"]) == 64 and a["applied_at"].endswith("+00:00") for a in data["applied"])
    assert data["pending"] == [
        {"id": i, "title": data["pending"][n]["title"], "out_of_order": False}
        for n, i in enumerate(BUNDLED_IDS[2:])
    ]


def test_check_reports_drift_with_exit_4(run: Any, real_db: Database[Any]) -> None:
    run("up")
    real_db["user_files"].drop_index("user_id_1_expires_at_-1")
    result = run("check")
    assert result.exit_code == 4
    assert result.output.startswith("drift: user_files index user_id_1_expires_at_-1: declared")


def test_an_edited_migration_exits_4_naming_the_file(run: Any, tmp_path: Path) -> None:
    folder = migrations_copy(tmp_path)
    assert run("--migrations", str(folder), "up").exit_code == 0
    (folder / "0003_enable_ttl.py").write_text("'''Changed.'''\ndef up(db): pass\ndef down(db): pass\n")
    result = run("--migrations", str(folder), "up")
    assert result.exit_code == 4
    assert "0003_enable_ttl.py" in result.output
    assert run("--migrations", str(folder), "status", "--check").exit_code == 4
    assert run("--migrations", str(folder), "check").exit_code == 4


def test_out_of_order_exits_4(run: Any, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    marker_migration(folder, "0001_a")
    marker_migration(folder, "0003_c")
    run("--migrations", str(folder), "up")
    marker_migration(folder, "0002_b")
    result = run("--migrations", str(folder), "up")
    assert result.exit_code == 4
    assert "0002_b" in result.output
    assert run("--migrations", str(folder), "up", "--allow-out-of-order").exit_code == 0


def test_lock_timeout_exits_5(run: Any, real_db: Database[Any], tmp_path: Path) -> None:
    real_db["migrations_lock"].insert_one(
        {"_id": "lock", "owner": "other", "host": "pod-1", "expires_at": dt.datetime(2100, 1, 1)}
    )
    (tmp_path / "migrate.yaml").write_text("lock_timeout_seconds: 0.3\nlock_poll_seconds: 0.1\n")
    result = run("up")
    assert result.exit_code == 5
    assert "held by run other on host pod-1" in result.output
    assert run("unlock", "--force").output == "Released the lock of run other on host pod-1.\n"
    assert run("up").exit_code == 0


def test_unreachable_server_fails_fast_without_the_password(run: Any, tmp_path: Path) -> None:
    uri = f"mongodb://bot:s3cret-pw@127.0.0.1:{free_port()}/"
    (tmp_path / "migrate.yaml").write_text("server_timeout_seconds: 1\n")
    started = time.monotonic()
    result = run("--uri", uri, "status")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert result.output.startswith("Error: cannot reach MongoDB at mongodb://bot:***@127.0.0.1:")
    assert "s3cret-pw" not in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("uri: [unclosed", "is not valid YAML"),
        ("- a list\n", "expected a mapping of settings"),
        ("colour: blue\n", "unknown setting(s) ['colour']"),
        ("transactions: sometimes\n", "transactions must be one of"),
        ("lock_timeout_seconds: -1\n", "lock_timeout_seconds must be a positive number"),
    ],
)
def test_a_bad_config_file_exits_2(run: Any, tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "migrate.yaml").write_text(content)
    result = run("status")
    assert result.exit_code == 2
    assert result.output.startswith("Error: config file") or message in result.output
    assert message in result.output


def test_a_missing_config_file_exits_2(run: Any) -> None:
    result = run("--config", "nope.yaml", "status")
    assert (result.exit_code, result.output) == (
        2,
        "Error: config file 'nope.yaml' does not exist\n",
    )


def test_flags_beat_environment_beats_file(mongod: LocalMongod, tmp_path: Path) -> None:
    (tmp_path / "migrate.yaml").write_text(f"uri: {mongod.uri}\ndb: from_file\n")
    state = State(environ={"MONGODB_DB": "from_env"}, cwd=tmp_path)
    assert state.settings().db == "from_env"
    state = State(db="from_flag", environ={"MONGODB_DB": "from_env"}, cwd=tmp_path)
    assert state.settings().db == "from_flag"
    assert State(environ={}, cwd=tmp_path).settings().db == "from_file"
    (tmp_path / "migrate.yaml").write_text("uri: mongodb://127.0.0.1:1/from_uri\n")
    assert State(environ={}, cwd=tmp_path).settings().db == "from_uri"
    (tmp_path / "migrate.yaml").write_text("uri: mongodb://127.0.0.1:1/\n")
    assert State(environ={}, cwd=tmp_path).settings().db == "chatgpt_discord_bot"


def test_new_creates_the_next_migration_from_the_template(run: Any, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    marker_migration(folder, "0007_x")
    result = run("--migrations", str(folder), "new", "add_checksum")
    assert result.output == f"Created {folder / '0008_add_checksum.py'}\n"
    text = (folder / "0008_add_checksum.py").read_text()
    assert text.startswith('"""Add checksum.')
    assert "def up(db: Any) -> None:" in text
    assert run("--migrations", str(folder), "new", "Bad Slug").exit_code == 2


def test_every_command_has_help_and_is_in_the_readme() -> None:
    root = Path(__file__).parent.parent
    readme = "".join(p.read_text() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])
    for name, command in cli.commands.items():
        assert command.help, name
        assert "Example:" in command.help, name
        assert f"migrate.py {name}" in readme or f"`{name}" in readme, name
