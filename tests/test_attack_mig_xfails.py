"""Attacks that broke a promise and need more than a local fix: each a strict xfail naming
the defect (the report describes them).

1. The dry run "supports user migrations that write outside the steps by reporting them instead
   of failing". A migration that reads back what it wrote (``find_one({"_id":
   r.inserted_id})``, the most common pattern after an insert) sends the read with a
   ``DryRunResult`` inside: PyMongo cannot encode it, the dry run fails (exit 1) on a migration
   that ``up`` runs fine, and the pull-request gate is red.
2. The config lookup upwards stops only at ``.git``. A project without ``.git`` (a Docker image
   built with ``.dockerignore`` excluding it, a source tarball) whose own ``pyproject.toml`` has
   no ``[tool.userfiles_db]`` table takes the ``migrate.yaml`` of whatever directory is above it
   (another project's, with its URI and database): the wrong database, silently.
3. The GitHub Actions recipe gives the pull-request job the deploy's secret, and its dry run runs
   the pull request's migration code: a read-write URI in the hands of unreviewed code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo.database import Database

from tests.migration_fixtures import write_migration
from userfiles_db.migrate import Runner, discover
from userfiles_db.migrate.config import resolve

READS_BACK = """
def up(db: Any) -> None:
    result = db["things"].insert_one({"x": 1})
    found = db["things"].find_one({"_id": result.inserted_id})
    db["things"].update_one({"_id": found["_id"]}, {"$set": {"y": 2}})

def down(db: Any) -> None:
    db["things"].delete_many({})
"""


@pytest.mark.xfail(
    strict=True,
    reason="dry run: a read whose filter holds a DryRunResult (r.inserted_id) is sent to the "
    "server and cannot be encoded: the dry run fails on a migration `up` runs fine",
)
def test_a_dry_run_of_a_migration_that_reads_back_its_insert_does_not_fail(
    real_db: Database[Any], tmp_path: Path
) -> None:
    write_migration(tmp_path, "0001_reads_back", READS_BACK)
    migrations = discover(tmp_path)
    planned = Runner(real_db, migrations).up(dry_run=True).planned
    assert any("things.insert_one" in line for line in planned["0001_reads_back"])
    assert real_db.list_collection_names() == []
    assert Runner(real_db, migrations).up().done == ["0001_reads_back"]


@pytest.mark.xfail(
    strict=True,
    reason="config lookup crosses a project root that has no .git (a Docker image, a tarball): "
    "the parent directory's migrate.yaml (another project's URI and db) is used",
)
def test_the_config_lookup_does_not_cross_into_a_parent_project(tmp_path: Path) -> None:
    (tmp_path / "migrate.yaml").write_text("db: someone_elses_database\n")  # e.g. the home directory
    app = tmp_path / "app"  # the bot's image: WORKDIR /app, .git left out by .dockerignore
    app.mkdir()
    (app / "pyproject.toml").write_text('[project]\nname = "chatgpt-discord-bot"\n')
    found = resolve(environ={}, cwd=app)
    assert found.config_file is None
    assert found.db == "chatgpt_discord_bot"


@pytest.mark.xfail(
    strict=True,
    reason="the GitHub Actions recipe gives pull requests the deploy's (read-write) MONGODB_URI, "
    "and `up --dry-run` runs the pull request's migration code with it",
)
def test_the_pull_request_job_does_not_get_the_deploy_credentials() -> None:
    recipe = Path(__file__).parent.parent / "deploy" / "github-actions" / "userfiles-migrate.yml"
    jobs = yaml.safe_load(recipe.read_text())["jobs"]
    # A pull request's migrations are code from the pull request: `up --dry-run` imports and
    # runs them (the read-only wrapper is no sandbox: `pymongo.MongoClient(os.environ[...])`).
    # docs/deploying.md says a read-only user is enough there, but one secret serves both jobs.
    assert jobs["check"]["env"]["MONGODB_URI"] != jobs["migrate"]["env"]["MONGODB_URI"]
