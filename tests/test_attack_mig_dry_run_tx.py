"""Attack: the dry run as a gate must fail where ``up`` fails. With ``transactions: always`` on a
standalone server, a ``TRANSACTIONAL`` migration makes ``up`` exit 1 before it starts, but the dry
run previewed it and exited 3 (pending): the pull request's gate passed, the deploy failed."""

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

TX = """
TRANSACTIONAL = True

def up(db: Any) -> None:
    db["things"].insert_one({"x": 1})

def down(db: Any) -> None:
    db["things"].delete_many({})
"""


@pytest.fixture
def run(mongod: LocalMongod, real_db: Database[Any], tmp_path: Path) -> Any:
    write_migration(tmp_path / "migrations", "0001_tx", TX)

    def invoke(mode: str, *args: str) -> Result:
        (tmp_path / "migrate.yaml").write_text(f"transactions: {mode}\nmigrations: migrations\n")
        state = State(environ={"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}, cwd=tmp_path)
        return CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False)

    return invoke


def test_dry_run_fails_like_up_when_a_transaction_is_required_on_a_standalone(
    run: Any, real_db: Database[Any]
) -> None:
    dry = run("always", "up", "--dry-run", "--json")
    assert dry.exit_code == 1, dry.output
    assert "must run in a transaction (transactions: always)" in json.loads(dry.stdout)["error"]
    assert real_db.list_collection_names() == []
    real = run("always", "up")
    assert real.exit_code == 1, real.output


def test_in_auto_mode_the_dry_run_says_what_up_says(run: Any) -> None:
    dry = run("auto", "up", "--dry-run")
    assert dry.exit_code == 3, dry.output
    assert "note: standalone server, 0001_tx runs without a transaction" in dry.stdout
    real = run("auto", "up")
    assert real.exit_code == 0, real.output
    assert "note: standalone server, 0001_tx runs without a transaction" in real.stdout
