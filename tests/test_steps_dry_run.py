"""``up --dry-run`` as a gate (issue 11 item 8): each pending migration is previewed against the
state the earlier pending ones would leave, and custom writes are reported, not sent."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.migration_fixtures import LEGACY_NOW, create_bot_collection, write_migration
from userfiles_db.migrate import EngineOptions, Runner, discover, steps
from userfiles_db.migrate.config import bundled_migrations
from userfiles_db.migrate.context import RunContext, running
from userfiles_db.migrate.steps import DryRunResult, ReadOnlyDatabase
from userfiles_db.schema import IndexSpec, load_schema

BUNDLED = discover(bundled_migrations())
IDS = [m.id for m in BUNDLED]


def runner(db: Database[Any], migrations: Any = None, lines: list[str] | None = None) -> Runner:
    return Runner(
        db,
        BUNDLED if migrations is None else migrations,
        EngineOptions(lock_poll_seconds=0.05),
        report=(lines.append if lines is not None else print),
    )


def snapshot(db: Database[Any]) -> dict[str, Any]:
    """Everything a dry run must leave as it was: collections, options, indexes, documents."""
    return {
        info["name"]: (
            info.get("options"),
            db[info["name"]].index_information(),
            list(db[info["name"]].find({}).sort("_id", 1)),
        )
        for info in db.list_collections()
    }


def test_on_an_empty_database_each_migration_is_previewed_on_the_state_the_earlier_ones_leave(
    real_db: Database[Any],
) -> None:
    result = runner(real_db, lines=[]).up(dry_run=True)
    assert list(result.planned) == IDS
    assert result.planned[IDS[0]][0] == "create collection user_files"
    assert (
        "create index expires_at_1 on user_files {'expires_at': 1} {'name': 'expires_at_1'}"
        in (result.planned[IDS[0]])
    )
    # 0003 meets the plain index 0001 would create: changed in place, not created.
    assert result.planned[IDS[2]] == [
        "convert legacy records: update 0 record(s) of user_files on the server, in _id batches of 5000",
        "collMod user_files: index expires_at_1 expireAfterSeconds None -> 0 (in place)",
    ]
    # 0004 meets the validator 0001 would set (moderate, warn).
    assert result.planned[IDS[3]] == ["collMod user_files: validator (strict, error)"]
    assert real_db.list_collection_names() == []


def test_the_dry_run_says_what_the_real_run_then_does(real_db: Database[Any]) -> None:
    create_bot_collection(real_db, 300, now=LEGACY_NOW)
    collection = real_db["user_files"]
    odd = [d["_id"] for d in collection.find({}, {"_id": 1}).sort("_id", 1).limit(3)]
    collection.update_one({"_id": odd[0]}, {"$set": {"uploaded_at": "11/12/2026"}})
    collection.update_one({"_id": odd[1]}, {"$set": {"expires_at": "0000-01-01T00:00:00"}})
    before = snapshot(real_db)

    previewed: list[str] = []
    plan = runner(real_db, lines=previewed).up(dry_run=True)
    assert snapshot(real_db) == before
    applied: list[str] = []
    assert runner(real_db, lines=applied).up().done == IDS

    # Every schema change previewed is the one sent, migration by migration, in order.
    sent = [x.strip() for x in applied if x.strip().startswith(("collMod", "create ", "rebuild "))]
    previewed_schema = [x for m in IDS for x in plan.planned[m] if not x.startswith("convert legacy")]
    assert previewed_schema == sent
    assert "collMod user_files: index expires_at_1 expireAfterSeconds None -> 0 (in place)" in sent
    # The data: 0002 converts all; 0003 would meet only what 0002 cannot convert (2 records).
    assert plan.planned[IDS[1]] == [
        "convert legacy records: update 300 record(s) of user_files on the server, in _id batches of 5000"
    ]
    assert plan.planned[IDS[2]][0].startswith("convert legacy records: update 2 record(s)")

    # The warnings of 0003 and 0004 are counted on the converted data, as the real run counts.
    def warnings(lines: list[str]) -> list[str]:
        kinds = ("already past", "not a date", "fail the schema")
        return [x.strip() for x in lines if "warning:" in x and any(k in x for k in kinds)]

    assert len(warnings(applied)) == 3
    assert warnings(previewed) == warnings(applied)
    assert "warning: 2 existing record(s) fail the schema" in " ".join(warnings(previewed))
    assert any("warning: 2 record(s) of user_files would keep dates that cannot be" in x for x in previewed)


CUSTOM = """
from pymongo import WriteConcern
from userfiles_db.migrate import steps

def up(db: Any) -> None:
    steps.ensure_collection(db, "things")
    result = db["things"].insert_one({"_id": 1, "n": 0})
    assert result.inserted_id is not None or True
    changed = db.things.update_many({"n": 0}, {"$inc": {"n": 1}}).modified_count
    db["audit"].insert_one({"changed": int(changed) + 1})
    db.command("collMod", "things", validator={"n": {"$type": "int"}})
    db.create_collection("other").insert_one({"x": 1})
    db["things"].with_options(write_concern=WriteConcern(w=1)).insert_one({"_id": 2})
    db.with_options(write_concern=WriteConcern(w=1))["things"].delete_one({"_id": 2})
    db["things"].database.drop_collection("things")
    db["things"].aggregate([{"$match": {}}, {"$out": "copy"}])
    db.client.admin.command("setParameter", 1, notablescan=1)
    db.drop_collection("audit")
    # Reads pass, and see the plan: the collection created by the step above.
    assert "things" in db.list_collection_names()
    assert db["things"].count_documents({}) == 0
    assert db["things"].index_information() == {"_id_": {"v": 2, "key": [("_id", 1)]}}
    assert db.command("ping")["ok"] == 1
    assert [i["name"] for i in db["things"].list_indexes()] == ["_id_"]
    assert [c["name"] for c in db.list_collections(filter={"name": "things"})] == ["things"]
    assert "things" in [c["name"] for c in db.list_collections()]
    assert list(db["things"].aggregate([{"$match": {}}])) == []
    for _ in db["things"].delete_many({}):
        raise AssertionError("a dry-run result holds nothing")

def down(db: Any) -> None:
    db.drop_collection("things")
"""


def test_custom_writes_are_reported_as_custom_code_and_not_sent(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "migrations"
    write_migration(folder, "0001_custom", CUSTOM)
    result = runner(real_db, discover(folder), lines=[]).up(dry_run=True)
    assert result.planned["0001_custom"] == [
        "create collection things",
        "run custom code: things.insert_one({'_id': 1, 'n': 0})",
        "run custom code: things.update_many({'n': 0}, {'$inc': {'n': 1}})",
        "run custom code: audit.insert_one({'changed': 1})",
        "run custom code: database.command('collMod', 'things', validator={'n': {'$type': 'int'}})",
        "run custom code: database.create_collection('other')",
        "run custom code: database.create_collection('other').insert_one({'x': 1})",
        "run custom code: things.insert_one({'_id': 2})",
        "run custom code: things.delete_one({'_id': 2})",
        "run custom code: database.drop_collection('things')",
        "run custom code: things.aggregate([{'$match': {}}, {'$out': 'copy'}])",
        "run custom code: database.client.admin.command('setParameter', 1, notablescan=1)",
        "run custom code: database.drop_collection('audit')",
        "run custom code: things.delete_many({})",
    ]
    assert real_db.list_collection_names() == []
    assert real_db.client.admin.command("getParameter", 1, notablescan=1)["notablescan"] is False


def test_long_custom_arguments_are_shortened() -> None:
    with running(RunContext(dry_run=True)) as ctx:
        steps._CustomCode("things.insert_many")([{"n": n} for n in range(1000)])
    assert len(ctx.planned) == 1
    assert ctx.planned[0].startswith("run custom code: things.insert_many([{'n': 0}, {'n': 1}")
    assert ctx.planned[0].endswith("...)")
    assert len(ctx.planned[0]) < 220


def test_a_dry_run_result_answers_like_an_empty_one() -> None:
    result = DryRunResult()
    assert int(result.modified_count) == 0
    assert not result.acknowledged
    assert list(result) == []
    assert len(result) == 0
    assert result["n"] is result
    assert repr(result) == "<dry run: not sent>"


def test_the_plan_carries_index_drops_rebuilds_and_ttl_changes(real_db: Database[Any]) -> None:
    schema = load_schema()
    real_db["user_files"].create_index("expires_at", expireAfterSeconds=60)
    preview = ReadOnlyDatabase(real_db)
    plain = IndexSpec("expires_at_1", (("expires_at", 1),))
    ttl = schema.index("expires_at_1")
    with running(RunContext(dry_run=True)) as ctx:
        assert steps.ensure_index(preview, "user_files", plain, allow_rebuild=True) == "would rebuild"
        assert "expireAfterSeconds" not in preview.index_information("user_files")["expires_at_1"]
        assert steps.ensure_index(preview, "user_files", plain) == "unchanged"
        assert steps.ensure_index(preview, "user_files", ttl) == "would change"
        assert preview.index_information("user_files")["expires_at_1"]["expireAfterSeconds"] == 0
        assert steps.ensure_index(preview, "user_files", ttl) == "unchanged"
        assert steps.ensure_validator(preview, "user_files", {"a": 1}, level="strict", action="error") == (
            "would change"
        )
        assert steps.ensure_validator(preview, "user_files", {"a": 1}, level="strict", action="error") == (
            "unchanged"
        )
        assert preview["user_files"].options()["validator"] == {"a": 1}
        assert steps.remove_validator(preview, "user_files") == "would change"
        assert steps.remove_validator(preview, "user_files") == "unchanged"
    assert len(ctx.planned) == 4
    assert real_db["user_files"].index_information()["expires_at_1"]["expireAfterSeconds"] == 60
    assert "validator" not in (real_db["user_files"].options())


def test_steps_given_the_real_database_in_a_dry_run_still_send_nothing(real_db: Database[Any]) -> None:
    with running(RunContext(dry_run=True)) as ctx:
        steps.ensure_schema(real_db, load_schema())
    assert ctx.planned[0] == "create collection user_files"
    assert any(line.startswith("create index file_id_1") for line in ctx.planned)
    assert real_db.list_collection_names() == []


@pytest.mark.parametrize("records", [0, 40])
def test_planned_data_updates_are_counted_on_the_planned_data(real_db: Database[Any], records: int) -> None:
    create_bot_collection(real_db, records, now=LEGACY_NOW)
    preview = ReadOnlyDatabase(real_db)
    not_a_date = {"expires_at": {"$exists": True, "$not": {"$type": ["date", "null"]}}}
    live = real_db["user_files"].count_documents(not_a_date)
    assert preview.count("user_files", not_a_date) == live
    with running(RunContext(dry_run=True)):
        steps.convert_legacy_records(preview, "user_files")
        assert preview.count("user_files", not_a_date) == 0
        assert preview.count("user_files", {"created_at": {"$type": "date"}}) == records
        # A second planned update is applied after the first (both paths counted).
        preview.plan_update("user_files", {"size": {"$gte": 0}}, [{"$set": {"size": -1}}])
        assert preview.count("user_files", {"size": -1}) == records
    assert real_db["user_files"].count_documents({"created_at": {"$exists": True}}) == 0


def test_a_dry_run_at_the_deadline_of_a_ttl_counts_with_now(real_db: Database[Any]) -> None:
    # ttl_warnings in a dry run, after a planned conversion: the expired count is on dates.
    create_bot_collection(real_db, 20, now=LEGACY_NOW)
    preview = ReadOnlyDatabase(real_db)
    with running(RunContext(dry_run=True)):
        steps.convert_legacy_records(preview, "user_files")
        counts = steps.ttl_warnings(preview, "user_files", "expires_at", now=dt.datetime.now(dt.timezone.utc))
    assert counts == {"not_a_date": 0, "already_expired": 2}
