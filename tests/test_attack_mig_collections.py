"""Attack: a config that names one collection for two of the tool's purposes (a copy-paste).

``history_collection: migrations_changelog`` made every history event read as an applied
migration with no file, so every later ``up`` failed; ``changelog_collection: migrations_lock``
read the lock document as a migration; ``history_collection: user_files`` wrote history events
into the bot's own collection (the unique index build of 0001 then failed on them). Now a
configuration error, exit 2, before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database

from userfiles_db.cli import State, cli
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import EngineOptions
from userfiles_db.migrate.errors import ConfigError

CASES = {
    "history_collection: migrations_changelog\n": "changelog_collection and history_collection",
    "changelog_collection: migrations_lock\n": "changelog_collection and lock_collection",
    "lock_collection: hist\nhistory_collection: hist\n": "lock_collection and history_collection",
    "history_collection: user_files\n": "history_collection must not be 'user_files'",
    "changelog_collection: user_files\n": "changelog_collection must not be 'user_files'",
}


@pytest.mark.parametrize("yaml_text", sorted(CASES))
def test_one_collection_for_two_purposes_is_refused_before_anything_is_written(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path, yaml_text: str
) -> None:
    (tmp_path / "migrate.yaml").write_text(yaml_text)
    state = State(environ={"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}, cwd=tmp_path)
    result = CliRunner().invoke(cli, ["up", "--json"], obj=state, catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert CASES[yaml_text] in json.loads(result.stdout)["error"]
    assert real_db.list_collection_names() == []


def test_the_defaults_and_distinct_names_still_work() -> None:
    assert EngineOptions().history_collection == "migrations_history"
    EngineOptions(changelog_collection="a", lock_collection="b", history_collection="c")
    with pytest.raises(ConfigError, match="must be different collections"):
        EngineOptions(changelog_collection="a", lock_collection="a")
