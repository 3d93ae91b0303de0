"""Attack: ``up --dry-run --accept-changed`` with an edited applied migration said "0
migration(s) would run" and exited 0 (nothing to do), while ``up --accept-changed`` then writes
the new checksum to the changelog. The dry run now says it would accept it and exits 3."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from pymongo.database import Database

from tests.migration_fixtures import write_migration
from userfiles_db.cli import State, cli
from userfiles_db.local_server import LocalMongod

BODY = """
def up(db: Any) -> None:
    db["things"].insert_one({"x": 1})

def down(db: Any) -> None:
    db["things"].delete_many({})
"""


def test_dry_run_with_accept_changed_previews_the_checksum_write(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    path = write_migration(tmp_path / "migrations", "0001_a", BODY)

    def run(*args: str) -> Result:
        state = State(environ={"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}, cwd=tmp_path)
        return CliRunner().invoke(
            cli, ["--migrations", str(tmp_path / "migrations"), *args], obj=state, catch_exceptions=False
        )

    assert run("up").exit_code == 0
    path.write_text(path.read_text() + "# a harmless comment\n")
    before = real_db["migrations_changelog"].find_one({"_id": "0001_a"})
    dry = run("up", "--dry-run", "--accept-changed", "--json")
    assert dry.exit_code == 3, dry.output
    assert json.loads(dry.stdout)["accepted_checksums"] == ["0001_a"]
    assert "would accept the new checksum of 0001_a" in dry.stderr
    assert real_db["migrations_changelog"].find_one({"_id": "0001_a"}) == before  # nothing written
    real = run("up", "--accept-changed")
    assert real.exit_code == 0, real.output
    assert "accepted the new checksum of 0001_a" in real.stdout
    assert run("up", "--dry-run", "--accept-changed").exit_code == 0  # now nothing to do
