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
from userfiles_db.migrate import Runner, discover


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


READS_BACK = """
def up(db: Any) -> None:
    result = db["things"].insert_one({"x": 1})
    found = db["things"].find_one({"_id": result.inserted_id})
    db["things"].update_one({"_id": found["_id"]}, {"$set": {"y": 2}})

def down(db: Any) -> None:
    db["things"].delete_many({})
"""


def test_a_dry_run_of_a_migration_that_reads_back_its_insert_reports_instead_of_failing(
    real_db: Database[Any], tmp_path: Path
) -> None:
    """A read holding what custom code got back (``r.inserted_id``) was sent to the server, which
    cannot encode it: the dry run failed on a migration ``up`` runs fine. It is reported now."""
    write_migration(tmp_path, "0001_reads_back", READS_BACK)
    migrations = discover(tmp_path)
    planned = Runner(real_db, migrations).up(dry_run=True).planned["0001_reads_back"]
    assert planned[0] == "run custom code: things.insert_one({'x': 1})"
    assert planned[1] == "run custom code: things.find_one({'_id': <dry run: not sent>})"
    assert len(planned) == 3
    assert real_db.list_collection_names() == []
    assert Runner(real_db, migrations).up().done == ["0001_reads_back"]
    assert real_db["things"].count_documents({"y": 2}) == 1
