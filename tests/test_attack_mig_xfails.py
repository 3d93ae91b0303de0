"""Attacks that broke a promise and need more than a local fix: each a strict xfail naming
the defect (the report describes them).

1. The config lookup upwards stops only at ``.git``. A project without ``.git`` (a Docker image
   built with ``.dockerignore`` excluding it, a source tarball) whose own ``pyproject.toml`` has
   no ``[tool.userfiles_db]`` table takes the ``migrate.yaml`` of whatever directory is above it
   (another project's, with its URI and database): the wrong database, silently.
2. The GitHub Actions recipe gives the pull-request job the deploy's secret, and its dry run runs
   the pull request's migration code: a read-write URI in the hands of unreviewed code.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from userfiles_db.migrate.config import resolve


def test_the_config_lookup_does_not_cross_into_a_parent_project(tmp_path: Path) -> None:
    (tmp_path / "migrate.yaml").write_text("db: someone_elses_database\n")  # e.g. the home directory
    app = tmp_path / "app"  # the bot's image: WORKDIR /app, .git left out by .dockerignore
    app.mkdir()
    (app / "pyproject.toml").write_text('[project]\nname = "chatgpt-discord-bot"\n')
    found = resolve(environ={}, cwd=app)
    assert found.config_file is None
    assert found.db == "chatgpt_discord_bot"


def test_the_pull_request_job_does_not_get_the_deploy_credentials() -> None:
    recipe = Path(__file__).parent.parent / "deploy" / "github-actions" / "userfiles-migrate.yml"
    jobs = yaml.safe_load(recipe.read_text())["jobs"]
    # A pull request's migrations are code from the pull request: `up --dry-run` imports and
    # runs them (the read-only wrapper is no sandbox: `pymongo.MongoClient(os.environ[...])`).
    # docs/deploying.md says a read-only user is enough there, but one secret serves both jobs.
    assert jobs["check"]["env"]["MONGODB_URI"] != jobs["migrate"]["env"]["MONGODB_URI"]
