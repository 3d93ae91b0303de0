"""Attacks on the dry run as a gate: a migration that raises, or calls ``sys.exit(0)``, while
being previewed. Before the fix the first printed a traceback (no JSON, exit 1 by accident) and
the second made ``up --dry-run`` exit 0: a pull request's gate went green on a migration that
cannot run."""

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


@pytest.fixture
def run(mongod: LocalMongod, real_db: Database[Any], tmp_path: Path) -> Any:
    def invoke(*args: str) -> Result:
        environ = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}
        state = State(environ=environ, cwd=tmp_path, interactive=False)
        return CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False)

    return invoke


BODIES = {
    "raises": """
def up(db: Any) -> None:
    raise ValueError("boom in up")

def down(db: Any) -> None:
    pass
""",
    "exits_0": """
import sys

def up(db: Any) -> None:
    sys.exit(0)

def down(db: Any) -> None:
    pass
""",
    "keyboard_interrupt": """
def up(db: Any) -> None:
    raise KeyboardInterrupt

def down(db: Any) -> None:
    pass
""",
}


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_dry_run_of_a_migration_that_raises_is_an_error_with_one_json_object(
    run: Any, real_db: Database[Any], tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / "migrations"
    write_migration(folder, "0001_bad", BODIES[kind])
    result = run("--migrations", str(folder), "up", "--dry-run", "--json")
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)  # one object, nothing else on stdout
    assert (data["ok"], data["exit_code"]) == (False, 1)
    assert "0001_bad raised during the dry run" in data["error"]
    assert "Traceback" not in result.stderr
    assert "Error: 0001_bad raised during the dry run" in result.stderr
    assert real_db.list_collection_names() == []  # still nothing written
