"""The migration engine on the real server: the user_files migrations, history rules, the lock."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database
from pymongo.errors import WriteError

from tests.helpers import file_data
from tests.migration_fixtures import (
    LEGACY_NOW,
    create_bot_collection,
    marker_migration,
    migrations_copy,
    write_migration,
)
from userfiles_db import UserFiles, load_schema
from userfiles_db.cli import State, cli
from userfiles_db.clock import UTC
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import (
    EngineOptions,
    InterruptedMigration,
    InvalidHistory,
    IrreversibleMigration,
    LockHeld,
    LockTimeout,
    MigrationError,
    Runner,
    SchemaStepConflict,
    discover,
    drift,
    history,
    lock_holder,
    resumable,
    status,
    steps,
    unlock,
)
from userfiles_db.migrate.config import bundled_migrations
from userfiles_db.migrate.engine import BUNDLED_RESUMABLE

BUNDLED = discover(bundled_migrations())
IDS = [m.id for m in BUNDLED]


def runner(db: Database[Any], migrations: Any = None, **options: Any) -> Runner:
    options.setdefault("lock_poll_seconds", 0.05)
    return Runner(db, BUNDLED if migrations is None else migrations, EngineOptions(**options))


def ms(value: dt.datetime) -> dt.datetime:
    """``value`` at BSON's millisecond precision."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def collection_names(db: Database[Any]) -> set[str]:
    return set(db.list_collection_names())


def test_empty_database_up_status_down_up(real_db: Database[Any]) -> None:
    assert status(real_db, BUNDLED, EngineOptions()).pending[0].id == IDS[0]
    assert collection_names(real_db) == set()  # status wrote nothing

    assert runner(real_db).up().done == IDS
    found = status(real_db, BUNDLED, EngineOptions())
    assert [e.id for e in found.applied] == IDS
    assert found.pending == []
    assert drift(real_db, load_schema()) == []
    assert runner(real_db).up().done == []  # exactly once

    assert runner(real_db).down("base").done == list(reversed(IDS))
    assert [e.id for e in status(real_db, BUNDLED, EngineOptions()).pending] == IDS
    assert runner(real_db).up().done == IDS
    assert drift(real_db, load_schema()) == []


def test_after_up_the_validator_rejects_and_ttl_deletes(real_db: Database[Any]) -> None:
    runner(real_db).up()
    collection = real_db["user_files"]
    with pytest.raises(WriteError) as info:
        collection.insert_one({**file_data(1, 1), "size": -5, "created_at": dt.datetime.now(UTC),
                               "expires_at": None})  # fmt: skip
    assert info.value.code == 121

    store = UserFiles(real_db)
    store.save_user_file(file_data(1, 2, expires_at=dt.datetime.now(UTC) + dt.timedelta(seconds=1)))
    deadline = time.monotonic() + 20
    while collection.count_documents({}) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert collection.count_documents({}) == 0


def test_adopting_the_bots_collection_loses_nothing(real_db: Database[Any]) -> None:
    kinds = create_bot_collection(real_db, 6000, now=LEGACY_NOW)
    collection = real_db["user_files"]
    before = {d["file_id"]: d for d in collection.find({}, {"_id": 0})}

    # Stage 1 of the rollout: the old bot keeps working (its legacy upsert and index creation).
    runner(real_db, migration_options={"batch_size": 700}).up("0002_adopt_legacy_records")
    written_meanwhile = {**next(iter(before.values())), "file_id": "legacy-during-rollout"}
    collection.update_one({"file_id": "legacy-during-rollout"}, {"$set": written_meanwhile}, upsert=True)
    collection.create_index([("user_id", 1), ("expires_at", -1)])
    collection.create_index("file_id", unique=True)
    collection.create_index("expires_at")

    # Stage 2, after the bot's update: TTL and strict validator.
    result = runner(real_db).up()
    assert result.done == ["0003_enable_ttl", "0004_enforce_validator"]
    # Nothing lost: every record is there but the expired ones, which the TTL monitor (every
    # second on the test server) may already be deleting.
    kept = set(collection.distinct("file_id"))
    expired = {f for f, d in before.items() if d["expires_at"] and d["expires_at"] < LEGACY_NOW.isoformat()}
    assert set(before) - kept <= expired
    assert "legacy-during-rollout" in kept
    assert collection.count_documents({"uploaded_at": {"$exists": True}}) == 0
    assert collection.count_documents({"file_size": {"$exists": True}}) == 0
    assert collection.count_documents({"created_at": {"$not": {"$type": "date"}}}) == 0
    assert collection.count_documents({"expires_at": {"$type": "string"}}) == 0
    assert collection.count_documents({"expires_at": None}) == kinds["never"]
    sample = collection.find_one({"file_id": next(iter(before))}, {"_id": 0})
    assert sample is not None
    original = before[sample["file_id"]]
    assert sample["size"] == original["file_size"]
    assert sample["created_at"] == ms(dt.datetime.fromisoformat(original["uploaded_at"]))
    assert collection.index_information()["expires_at_1"]["expireAfterSeconds"] == 0
    assert drift(real_db, load_schema()) == []

    # The TTL monitor now removes what had expired, and only that.
    deadline = time.monotonic() + 30
    while collection.count_documents({}) > len(before) + 1 - kinds["expired"]:
        assert time.monotonic() < deadline, "the TTL monitor did not delete the expired records"
        time.sleep(0.5)
    time.sleep(1.5)
    assert collection.count_documents({}) == len(before) + 1 - kinds["expired"]


def test_unconvertible_dates_are_left_untouched_and_counted(real_db: Database[Any]) -> None:
    create_bot_collection(real_db, 10, now=LEGACY_NOW)
    real_db["user_files"].update_one({}, {"$set": {"uploaded_at": "yesterday-ish"}})
    lines: list[str] = []
    Runner(real_db, BUNDLED, report=lines.append).up("0002_adopt_legacy_records")
    assert real_db["user_files"].count_documents({"created_at": "yesterday-ish"}) == 1
    assert any("1 record(s) of user_files have dates that could not be converted" in x for x in lines)
    assert real_db["user_files"].count_documents({}) == 10


def test_down_of_the_adoption_restores_the_legacy_shape(real_db: Database[Any]) -> None:
    create_bot_collection(real_db, 50, now=LEGACY_NOW)
    before = {d["file_id"]: d for d in real_db["user_files"].find({}, {"_id": 0})}
    runner(real_db).up("0002_adopt_legacy_records")
    runner(real_db).down(steps=1)
    after = {d["file_id"]: d for d in real_db["user_files"].find({}, {"_id": 0})}
    assert after.keys() == before.keys()
    for file_id, record in before.items():
        # isoformat strings come back with millisecond precision, parseable by the old bot
        assert dt.datetime.fromisoformat(after[file_id]["uploaded_at"]) == ms(
            dt.datetime.fromisoformat(record["uploaded_at"])
        )
        assert after[file_id]["file_size"] == record["file_size"]


def test_dry_run_writes_nothing_and_says_what_it_would_send(real_db: Database[Any]) -> None:
    create_bot_collection(real_db, 20, now=LEGACY_NOW)
    before = list(real_db["user_files"].find({}))
    indexes = real_db["user_files"].index_information()
    result = runner(real_db).up(dry_run=True)
    assert list(result.planned) == IDS
    assert "collMod user_files: validator (moderate, warn)" in result.planned[IDS[0]]
    assert any("update 20 record(s)" in line for line in result.planned[IDS[1]])
    assert list(real_db["user_files"].find({})) == before
    assert real_db["user_files"].index_information() == indexes
    assert collection_names(real_db) == {"user_files"}  # no changelog, no lock


def test_an_edited_applied_migration_is_refused_until_accepted(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = migrations_copy(tmp_path)
    runner(real_db, discover(folder)).up("0001_create_user_files")
    path = folder / "0001_create_user_files.py"
    path.write_text(path.read_text() + "\nEDITED = True\n")
    with pytest.raises(InvalidHistory, match=r"0001_create_user_files\.py"):
        runner(real_db, discover(folder)).up()
    assert status(real_db, discover(folder), EngineOptions()).changed[0].id == "0001_create_user_files"
    # Line endings and trailing spaces are not edits.
    path.write_text(path.read_text().replace("\nEDITED = True\n", "").replace("\n", "  \r\n"))
    assert status(real_db, discover(folder), EngineOptions()).changed == []
    path.write_text(path.read_text() + "# a harmless comment\n")
    result = runner(real_db, discover(folder)).up(allow_changed=True)
    assert result.accepted_checksums == ["0001_create_user_files"]
    assert status(real_db, discover(folder), EngineOptions()).changed == []


def test_an_out_of_order_migration_is_refused_not_skipped(real_db: Database[Any], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    marker_migration(folder, "0001_first")
    marker_migration(folder, "0003_third")
    runner(real_db, discover(folder)).up()
    marker_migration(folder, "0002_from_a_branch")
    with pytest.raises(InvalidHistory, match="0002_from_a_branch"):
        runner(real_db, discover(folder)).up()
    assert real_db["marks"].find_one({"_id": "0002_from_a_branch"}) is None
    assert runner(real_db, discover(folder)).up(allow_out_of_order=True).done == ["0002_from_a_branch"]


def test_a_failed_migration_is_recorded_failed_and_blocks_until_resumed(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    marker_migration(folder, "0001_first")
    write_migration(folder, "0002_flaky", """
        def up(db: Any) -> None:
            db["marks"].insert_one({"_id": "half"})
            if not db["switch"].find_one({"_id": "on"}):
                raise RuntimeError("disk full")

        def down(db: Any) -> None:
            pass
    """)  # fmt: skip
    with pytest.raises(MigrationError, match="0002_flaky failed: RuntimeError: disk full"):
        runner(real_db, discover(folder)).up()
    found = status(real_db, discover(folder), EngineOptions())
    assert [(e.id, e.state) for e in found.entries] == [
        ("0001_first", "applied"),
        ("0002_flaky", "failed"),
    ]
    with pytest.raises(InterruptedMigration, match="0002_flaky: failed since"):
        runner(real_db, discover(folder)).up()
    real_db["switch"].insert_one({"_id": "on"})
    real_db["marks"].delete_one({"_id": "half"})
    assert runner(real_db, discover(folder)).up(resume=True).done == ["0002_flaky"]
    assert lock_holder(real_db, EngineOptions()) is None  # released after failures too


def test_an_irreversible_migration_refuses_down_unless_forced(real_db: Database[Any], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    marker_migration(folder, "0001_first")
    marker_migration(folder, "0002_one_way", "\nREVERSIBLE = False\n")
    runner(real_db, discover(folder)).up()
    with pytest.raises(IrreversibleMigration, match="0002_one_way cannot be undone"):
        runner(real_db, discover(folder)).down("base")
    assert real_db["marks"].count_documents({}) == 2  # nothing undone, not even 0001... yet
    assert runner(real_db, discover(folder)).down("base", force=True).done == [
        "0002_one_way",
        "0001_first",
    ]
    assert real_db["marks"].count_documents({}) == 0


def test_stamp_records_without_running(real_db: Database[Any], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    for stem in ("0001_a", "0002_b", "0003_c"):
        marker_migration(folder, stem)
    assert runner(real_db, discover(folder)).stamp("0002_b").done == ["0001_a", "0002_b"]
    assert real_db["marks"].count_documents({}) == 0
    assert runner(real_db, discover(folder)).up().done == ["0003_c"]
    entries = status(real_db, discover(folder), EngineOptions()).to_dict()["applied"]
    assert [e["stamped"] for e in entries] == [True, True, False]


def test_a_second_runner_waits_for_the_lock_then_finds_nothing_to_do(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_slow", """
        import time

        def up(db: Any) -> None:
            time.sleep(1.5)
            db["marks"].insert_one({"_id": "slow"})

        def down(db: Any) -> None:
            pass
    """)  # fmt: skip
    results: dict[str, list[str]] = {}

    def run(name: str) -> None:
        results[name] = runner(real_db, discover(folder), lock_lease_seconds=0.6).up().done

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
        time.sleep(0.2)
    for t in threads:
        t.join()
    assert sorted(results.values()) == [[], ["0001_slow"]]  # the lease was renewed meanwhile
    assert real_db["marks"].count_documents({}) == 1


def test_lock_wait_times_out_and_a_dead_holders_lease_expires(real_db: Database[Any]) -> None:
    lock = real_db["migrations_lock"]
    lock.insert_one({"_id": "lock", "owner": "dead-run", "host": "pod-7",
                     "expires_at": dt.datetime.now(UTC) + dt.timedelta(seconds=2)})  # fmt: skip
    with pytest.raises(LockTimeout, match="held by run dead-run on host pod-7"):
        runner(real_db, lock_timeout_seconds=0.5).up()
    # The holder never renews: its lease runs out and the next runner proceeds.
    assert runner(real_db, lock_timeout_seconds=10).up().done == IDS
    assert lock.count_documents({}) == 0


def test_unlock_refuses_a_live_lease_unless_forced(real_db: Database[Any]) -> None:
    real_db["migrations_lock"].insert_one(
        {"_id": "lock", "owner": "stuck", "host": "h", "expires_at": dt.datetime(2100, 1, 1)}
    )
    with pytest.raises(LockHeld, match="live: held by run stuck on host h") as info:
        unlock(real_db, EngineOptions())
    assert info.value.exit_code == 5
    assert real_db["migrations_lock"].count_documents({}) == 1
    holder = unlock(real_db, EngineOptions(), force=True)
    assert holder is not None
    assert holder["owner"] == "stuck"
    assert unlock(real_db, EngineOptions()) is None
    # An expired lease (its runner is dead) needs no force.
    real_db["migrations_lock"].insert_one(
        {"_id": "lock", "owner": "dead", "host": "h", "expires_at": dt.datetime(2000, 1, 1)}
    )
    assert (unlock(real_db, EngineOptions()) or {}).get("owner") == "dead"
    events = [(e["event"], e["forced"]) for e in history(real_db, EngineOptions())]
    assert events == [("unlocked", True), ("unlocked", False)]


def test_ttl_conflicts_are_explained_not_forced(real_db: Database[Any]) -> None:
    collection = real_db["user_files"]
    collection.create_index("expires_at", name="my_expiry")  # same key, another name
    spec = load_schema().index("expires_at_1")
    with pytest.raises(SchemaStepConflict, match=r"my_expiry.*code 85 IndexOptionsConflict"):
        steps.ensure_index(real_db, "user_files", spec)
    collection.drop_index("my_expiry")
    collection.create_index("file_id", name="file_id_1")  # declared unique
    with pytest.raises(SchemaStepConflict, match=r"not unique.*code 86"):
        steps.ensure_index(real_db, "user_files", load_schema().index("file_id_1"))


def test_ttl_value_changes_in_place_with_warnings(real_db: Database[Any]) -> None:
    collection = real_db["user_files"]
    collection.create_index("expires_at", name="expires_at_1")
    collection.insert_many([
        {"expires_at": "2020-01-01T00:00:00"},  # a string: never expires
        {"expires_at": dt.datetime(2020, 1, 1)},  # long past: a burst of deletes
        {"expires_at": None},
    ])  # fmt: skip
    lines: list[str] = []
    from userfiles_db.migrate.context import RunContext, running

    with running(RunContext(report=lines.append)):
        assert steps.ensure_index(real_db, "user_files", load_schema().index("expires_at_1")) == "changed"
    assert any("1 record(s) of user_files have a expires_at that is not a date" in x for x in lines)
    assert any("1 record(s) of user_files are already past expires_at" in x for x in lines)
    index_id = collection.index_information()["expires_at_1"]
    longer = load_schema().index("expires_at_1").__class__("expires_at_1", (("expires_at", 1),),
                                                            expire_after_seconds=3600)  # fmt: skip
    assert steps.ensure_index(real_db, "user_files", longer) == "changed"
    assert collection.index_information()["expires_at_1"]["expireAfterSeconds"] == 3600
    assert index_id["key"] == collection.index_information()["expires_at_1"]["key"]


def test_drift_reports_each_difference(real_db: Database[Any]) -> None:
    runner(real_db).up()
    real_db.command("collMod", "user_files", validationAction="warn")
    real_db["user_files"].drop_index("user_id_1_expires_at_-1")
    real_db["user_files"].create_index("filename")
    subjects = [d.subject for d in drift(real_db, load_schema())]
    assert subjects == [
        "user_files validationAction",
        "user_files index user_id_1_expires_at_-1",
        "user_files index filename_1",
    ]


def test_before_5_1_a_ttl_needs_an_allowed_rebuild(
    real_db: Database[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server here is 6.0; pretend it is 5.0 to take the path older servers need.
    monkeypatch.setattr(steps, "server_version", lambda db: (5, 0, 9))
    real_db["user_files"].create_index("expires_at", name="expires_at_1")
    spec = load_schema().index("expires_at_1")
    with pytest.raises(
        SchemaStepConflict, match=r"5\.0\.9 cannot turn the plain index .* allow_index_rebuild"
    ):
        steps.ensure_index(real_db, "user_files", spec)
    assert "expireAfterSeconds" not in real_db["user_files"].index_information()["expires_at_1"]
    assert steps.ensure_index(real_db, "user_files", spec, allow_rebuild=True) == "rebuilt"
    assert real_db["user_files"].index_information()["expires_at_1"]["expireAfterSeconds"] == 0


def test_history_command_and_reading_it_never_scans(strict_mongod: LocalMongod, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    marker_migration(folder, "0001_first")
    marker_migration(folder, "0002_second")
    with strict_mongod.client(tz_aware=True) as client:  # notablescan: a collection scan fails
        db = client[f"h_{uuid.uuid4().hex[:8]}"]
        run = runner(db, discover(folder))
        run.up()
        run.down()
        events = [(e["event"], e.get("migration")) for e in history(db, EngineOptions())]
        assert events == [
            ("run_started", None), ("started", "0001_first"), ("applied", "0001_first"),
            ("started", "0002_second"), ("applied", "0002_second"), ("run_finished", None),
            ("run_started", None), ("revert_started", "0002_second"), ("reverted", "0002_second"),
            ("run_finished", None),
        ]  # fmt: skip
        assert len(history(db, EngineOptions(), limit=2)) == 2

        state = State(environ={"MONGODB_URI": strict_mongod.uri, "MONGODB_DB": db.name}, cwd=tmp_path)
        shown = CliRunner().invoke(cli, ["history"], obj=state, catch_exceptions=False)
        assert shown.exit_code == 0, shown.output
        lines = shown.stdout.splitlines()  # the target line is on stderr
        assert len(lines) == 10
        assert "applied" in lines[2]
        assert f"run {run.run_id}" in lines[2]
        assert "0001_first" in lines[2]
        assert "exit 0" in lines[-1]
        as_json = CliRunner().invoke(
            cli, ["history", "--json", "--limit", "1"], obj=state, catch_exceptions=False
        )
        assert as_json.exit_code == 0, as_json.output
        [last] = json.loads(as_json.stdout)["events"]
        assert (last["event"], last["command"], last["exit_code"], last["done"]) == (
            "run_finished", "down", 0, ["0002_second"]
        )  # fmt: skip
        assert last["at"].endswith("+00:00")
        client.drop_database(db.name)


def test_the_bundled_migrations_are_resumable_by_their_checksums(tmp_path: Path) -> None:
    # The registry must follow the files (which never change once published)...
    assert {m.id: m.checksum for m in BUNDLED} == BUNDLED_RESUMABLE
    assert all(resumable(m) for m in BUNDLED)
    # ...and a project's file that reuses a bundled id does not inherit the declaration.
    folder = tmp_path / "m"
    marker_migration(folder, "0002_adopt_legacy_records")
    assert not resumable(discover(folder)[0])
    marker_migration(folder, "0003_mine", "\nRESUMABLE = True\n")
    assert resumable(discover(folder)[1])


def test_changelog_writes_are_compare_and_set(real_db: Database[Any]) -> None:
    from userfiles_db.migrate.changelog import Changelog, ChangelogConflict

    log = Changelog(real_db, "migrations_changelog")
    now = dt.datetime.now(UTC)
    mine = {"state": "applying", "checksum": "c", "started_at": now, "host": "h", "run_id": "a"}
    log.put("0001_x", None, mine)
    log.put("0001_x", None, mine)  # a retry of our own write whose reply was lost: done already
    with pytest.raises(ChangelogConflict, match="changed by another run"):
        log.put("0001_x", None, {**mine, "run_id": "b"})  # b also saw it pending: refused
    with pytest.raises(ChangelogConflict):
        log.put("0001_x", {"state": "applying", "run_id": "b"}, {**mine, "state": "applied", "run_id": "b"})
    log.put("0001_x", {"state": "applying", "run_id": "a"}, {**mine, "state": "applied"})
    with pytest.raises(ChangelogConflict):  # a stale runner cannot mark it failed afterwards
        log.set_fields("0001_x", {"state": "applying", "run_id": "a"}, {"state": "failed"})
    with pytest.raises(ChangelogConflict):
        log.remove("0001_x", {"state": "reverting", "run_id": "b"})
    record = log.record("0001_x")
    assert record is not None
    assert (record["state"], record["run_id"]) == ("applied", "a")
