"""``migrate.py plan`` on the real server: the per-collection change and its costs, checked against
what really happens when ``up`` runs (the TTL monitor's deletes, the index builds)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result
from pymongo.database import Database

from tests.migration_fixtures import LEGACY_NOW, create_bot_collection
from userfiles_db.cli import State, cli
from userfiles_db.local_server import LocalMongod


def run(mongod: LocalMongod, db: Database[Any], cwd: Path, *args: str, code: int) -> Result:
    state = State(environ={"MONGODB_URI": mongod.uri, "MONGODB_DB": db.name}, cwd=cwd)
    result = CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def test_plan_on_the_bots_collection_counts_what_the_ttl_then_deletes(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    kinds = create_bot_collection(real_db, 300, now=LEGACY_NOW)
    result = run(mongod, real_db, tmp_path, "plan", "--json", code=3)
    found = json.loads(result.stdout)
    assert found["pending"] == [
        "0001_create_user_files", "0002_adopt_legacy_records", "0003_enable_ttl", "0004_enforce_validator",
    ]  # fmt: skip
    (user_files,) = found["collections"]
    assert user_files["collection"] == "user_files"
    assert user_files["declared_version"] == 1
    assert user_files["remaining_drift"] == []  # the bundled migrations reach schema v1
    assert "~ index expires_at_1: TTL none -> 0 s (in place)" in user_files["changes"]
    # The dates are strings today; counted after 0002 converts them, as the TTL will see them.
    assert user_files["costs"] == {
        "ttl_deletes_at_once:expires_at_1": kinds["expired"],
        "validator_rejects": 0,
    }
    assert "index_build_records" not in user_files["costs"]  # the bot's indexes are kept, not rebuilt
    assert real_db["user_files"].count_documents({"expires_at": {"$type": "string"}}) == 300 - kinds["never"]

    run(mongod, real_db, tmp_path, "-q", "up", code=0)
    deadline = time.monotonic() + 30
    while real_db["user_files"].count_documents({}) > 300 - kinds["expired"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert real_db["user_files"].count_documents({}) == 300 - kinds["expired"]
    assert run(mongod, real_db, tmp_path, "plan", code=0).stdout.splitlines() == [
        "Pending: none",
        "user_files (schema v1): no change",
    ]


def test_plan_shows_builds_and_stricter_validators_with_their_costs(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    run(mongod, real_db, tmp_path, "-q", "up", code=0)
    now = dt.datetime.now(dt.timezone.utc)
    collection = real_db["user_files"]
    collection.insert_many(
        [
            {"file_id": f"f{n}", "user_id": 1, "filename": "a", "file_type": "csv", "file_path": "/a",
             "size": n, "created_at": now, "expires_at": now + dt.timedelta(hours=1 + n),
             **({"tag": n} if n < 2 else {})}
            for n in range(5)
        ]
    )  # fmt: skip
    (tmp_path / "migrations").mkdir()
    for path in Path("migrations").glob("0*.py"):
        (tmp_path / "migrations" / path.name).write_text(path.read_text())
    (tmp_path / "migrations" / "0005_tags.py").write_text(
        '"""Tags."""\n\nfrom typing import Any\n\nfrom userfiles_db.migrate import steps\n'
        "from userfiles_db.schema import IndexSpec, load_schema\n\n"
        'V = load_schema("user_files", 1).validator\n'
        'TAGGED = {"$jsonSchema": {**V["$jsonSchema"], "properties": {**V["$jsonSchema"]["properties"], '
        '"tag": {"bsonType": "string"}}}}\n\n\n'
        "def up(db: Any) -> None:\n"
        '    steps.ensure_validator(db, "user_files", TAGGED, level="strict", action="error")\n'
        '    steps.ensure_index(db, "user_files", IndexSpec("tag_1", (("tag", 1),)))\n'
        '    steps.ensure_index(db, "user_files", IndexSpec("expires_at_1", (("expires_at", 1),), False, 7200))'  # noqa: E501
        "\n\n\n"
        "def down(db: Any) -> None:\n    pass\n"
    )
    result = run(mongod, real_db, tmp_path, "-q", "--migrations", "migrations", "plan", code=4)
    lines = result.stdout.splitlines()
    assert lines[0] == "Pending: 0005_tags"
    assert "  + index tag_1 {tag: 1}" in lines
    assert "  ~ index expires_at_1: TTL 0 -> 7200 s (in place)" in lines
    assert "  cost: index build(s) tag_1 over about 5 record(s)" in lines
    assert (
        "  cost: validator: 2 existing record(s) fail it (not re-checked; updates to them rejected)" in lines
    )
    # The bundled schema v1 declares neither the tag rule, nor tag_1, nor a 7200 s TTL: exit 4.
    remaining = [line.split(": ")[1] for line in lines if line.startswith("  still differs")]
    assert remaining == ["user_files validator", "user_files index expires_at_1", "user_files index tag_1"]
    # A longer TTL deletes nothing new: no count for it.
    assert not any("TTL expires_at_1:" in line for line in lines)
    assert collection.index_information().get("tag_1") is None  # nothing was written


def test_plan_to_an_earlier_migration_is_not_drift(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    result = run(mongod, real_db, tmp_path, "-q", "plan", "--to", "0001_create_user_files", code=3)
    assert result.stdout.splitlines()[0] == "Pending: 0001_create_user_files"
    assert "still differs" not in result.stdout  # stopping early is what was asked
    assert (
        run(mongod, real_db, tmp_path, "-q", "plan", "--to", "0004_enforce_validator", code=3).stdout.count(
            "still differs"
        )
        == 0
    )
