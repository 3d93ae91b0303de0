"""Attack: the exit code of ``status --check`` after a killed run.

The one exit-code table says 6 means "a person must look: an earlier run left a migration that
cannot be resumed automatically", and that a pipeline retries on 1 and pages on 6. ``status
--check`` exits 1 for *any* interrupted migration: a migration that needs a person is reported
as a retryable error (a retry loop never pages anyone), and one the next ``up`` resumes by itself
fails the pull-request gate as an error. Now ``status --check`` answers what ``up`` would: 6 when
a person must look, 3 when ``up`` resumes it by itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database

from tests.migration_fixtures import write_migration
from userfiles_db.cli import State, cli
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import EngineOptions, MigrationError, Runner, discover
from userfiles_db.migrate.errors import EXIT_NEEDS_ATTENTION

FAILS_ONCE = """
RESUMABLE = %(resumable)s

def up(db: Any) -> None:
    raise KeyboardInterrupt  # stands for the kill: recorded, not resumable by a transient rule

def down(db: Any) -> None:
    pass
"""


@pytest.mark.parametrize(("resumable", "expected"), [(False, EXIT_NEEDS_ATTENTION)])
def test_status_check_after_an_interrupted_run_says_what_up_would_do(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path, resumable: bool, expected: int
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_x", FAILS_ONCE % {"resumable": resumable})
    with pytest.raises(MigrationError):
        Runner(real_db, discover(folder)).up()
    # A person is needed: `up` itself says so with 6.
    state = State(environ={"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}, cwd=tmp_path)
    up = CliRunner().invoke(cli, ["--migrations", str(folder), "up"], obj=state, catch_exceptions=False)
    assert up.exit_code == EXIT_NEEDS_ATTENTION, up.output
    state = State(environ={"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}, cwd=tmp_path)
    check = CliRunner().invoke(
        cli, ["--migrations", str(folder), "status", "--check"], obj=state, catch_exceptions=False
    )
    assert check.exit_code == expected, check.output


def test_status_check_and_up_refuse_alike(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    """The check is up's own judgement (review: two if-chains had drifted apart): an applied
    migration whose file is gone is 4 for both, and a stuck migration beside an edited one is 6."""
    folder = tmp_path / "m"
    env = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}

    def exit_of(*args: str) -> int:
        state = State(environ=env, cwd=tmp_path)
        return CliRunner().invoke(cli, ["--migrations", str(folder), *args], obj=state).exit_code

    gone = write_migration(
        folder, "0001_gone", "def up(db: Any) -> None:\n    pass\n\ndef down(db: Any) -> None:\n    pass\n"
    )
    Runner(real_db, discover(folder)).up()
    gone.unlink()
    write_migration(
        folder, "0002_next", "def up(db: Any) -> None:\n    pass\n\ndef down(db: Any) -> None:\n    pass\n"
    )
    assert exit_of("up") == exit_of("status", "--check") == 4

    real_db.drop_collection("migrations_changelog")
    edited = write_migration(
        folder, "0001_gone", "def up(db: Any) -> None:\n    pass\n\ndef down(db: Any) -> None:\n    pass\n"
    )
    (folder / "0002_next.py").unlink()
    write_migration(folder, "0002_stuck", FAILS_ONCE % {"resumable": False})
    with pytest.raises(MigrationError):
        Runner(real_db, discover(folder), EngineOptions()).up()  # 0001 applied, 0002 left failed
    edited.write_text(edited.read_text() + "\n# edited\n")  # and now an applied file is edited too
    assert exit_of("up") == exit_of("status", "--check") == EXIT_NEEDS_ATTENTION
