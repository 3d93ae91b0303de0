"""Attack: ``--json`` promises one JSON object on stdout and nothing else, but a migration that
calls ``print()`` (common for progress in users' migrations) wrote to the same stdout, so
``up --json | jq`` failed. While a command with ``--json`` runs, stdout now goes to stderr; the
JSON result alone goes to stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pymongo.database import Database

from tests.migration_fixtures import write_migration
from userfiles_db.cli import State, cli
from userfiles_db.local_server import LocalMongod

CHATTY = """
import sys

def up(db: Any) -> None:
    print("converting things...")
    sys.stdout.write("more progress\\n")
    db["things"].insert_one({"x": 1})

def down(db: Any) -> None:
    print("undoing things...")
    db["things"].delete_many({})
"""


@pytest.fixture
def run(mongod: LocalMongod, real_db: Database[Any], tmp_path: Path) -> Any:
    folder = tmp_path / "migrations"
    write_migration(folder, "0001_chatty", CHATTY)

    def invoke(*args: str) -> Result:
        environ = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}
        state = State(environ=environ, cwd=tmp_path, interactive=False)
        return CliRunner().invoke(
            cli, ["--migrations", str(folder), *args], obj=state, catch_exceptions=False
        )

    return invoke


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["up", "--dry-run", "--json"], 3, None),
        (["up", "--json"], 0, "converting things..."),
        (["down", "--json"], 0, "undoing things..."),
    ],
)
def test_a_migration_printing_never_breaks_the_json_on_stdout(
    run: Any, real_db: Database[Any], args: list[str], code: int, said: str | None
) -> None:
    if args[0] == "down":
        assert run("up").exit_code == 0
    result = run(*args)
    assert result.exit_code == code, result.output
    data = json.loads(result.stdout)  # the whole of stdout is the one object
    assert data["exit_code"] == code
    if said is not None:
        assert said in result.stderr
        assert "more progress" in result.stderr or args[0] == "down"


def test_without_json_a_migration_still_prints_to_stdout(run: Any) -> None:
    result = run("up")
    assert result.exit_code == 0, result.output
    assert "converting things..." in result.stdout


def test_with_json_logs_what_a_migration_prints_is_a_json_log_line(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    write_migration(folder, "0001_chatty", CHATTY)
    state = State(environ={"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}, cwd=tmp_path)
    result = CliRunner().invoke(
        cli, ["--log-format", "json", "--migrations", str(folder), "up", "--json"], obj=state,
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["applied"] == ["0001_chatty"]
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    printed = [line["message"] for line in lines if line.get("stream") == "stdout"]
    assert printed == ["converting things...", "more progress"]
