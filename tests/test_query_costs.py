"""What keeps the performance figures honest, without timing anything: no collection scans,
exact round trips, and index-only reads even with a large backlog of expired records."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient, monitoring
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tests.conftest import EventLoopThread, SyncOverAsync
from tests.helpers import file_data
from tests.migration_fixtures import LEGACY_NOW, create_bot_collection, legacy_record
from userfiles_db import AsyncUserFiles, UserFiles, load_schema
from userfiles_db.clock import UTC
from userfiles_db.disk import sweep
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import EngineOptions, Runner, discover, drift, status, steps
from userfiles_db.migrate.config import bundled_migrations

USER = 10**17 + 9
IGNORED = {"hello", "isMaster", "ismaster", "ping", "endSessions", "buildInfo"}


class Commands(monitoring.CommandListener):
    """Counts the commands a client sends (its handshakes and pings aside)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in IGNORED:
            self.sent.append({"name": event.command_name, "command": dict(event.command)})

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def take(self) -> list[str]:
        names = [c["name"] for c in self.sent]
        self.sent.clear()
        return names


@pytest.fixture
def strict_db(strict_mongod: LocalMongod) -> Iterator[Database[Any]]:
    with strict_mongod.client() as client:
        name = f"strict_{uuid.uuid4().hex[:12]}"
        yield client[name]
        client.drop_database(name)


def exercise(store: Any, user: int) -> None:
    """Every operation of the query API, the limit's eviction included."""
    for n in range(4):
        store.save_user_file(file_data(user, n))
    store.save_user_file(legacy_record(9, user, now=LEGACY_NOW))  # the bot's writer dict
    assert len(store.get_user_files(user)) == 3
    assert store.get_file(file_data(user, 3)["file_id"], user_id=user) is not None
    assert store.delete_user_file(file_data(user, 3)["file_id"], user_id=user)
    assert store.take_file(file_data(user, 2)["file_id"]) is not None
    store.delete_expired_files()
    assert store.delete_all_user_files(user)


def test_no_operation_or_migration_scans_a_collection(
    strict_db: Database[Any], strict_mongod: LocalMongod, event_loop_thread: EventLoopThread,
    tmp_path: Path,
) -> None:  # fmt: skip
    # Every migration, on the bot's legacy collection (unconvertible values and down included).
    create_bot_collection(strict_db, 3000, now=LEGACY_NOW)
    strict_db["user_files"].update_one({"file_id": {"$exists": True}}, {"$set": {"uploaded_at": "?"}})
    migrations = discover(bundled_migrations())
    Runner(strict_db, migrations).up(dry_run=True)
    Runner(strict_db, migrations).up()
    Runner(strict_db, migrations).down("0001_create_user_files")
    Runner(strict_db, migrations).up()
    assert status(strict_db, migrations, EngineOptions()).pending == []
    assert drift(strict_db, load_schema()) == []
    steps.count_invalid(strict_db, "user_files", load_schema().validator)

    # Every operation of both APIs (a query without an index fails on this server).
    exercise(UserFiles(strict_db, max_files_per_user=3), USER)

    async def connect() -> AsyncMongoClient[dict[str, Any]]:
        return AsyncMongoClient(strict_mongod.uri)

    client = event_loop_thread.run(connect())
    exercise(
        SyncOverAsync(AsyncUserFiles(client[strict_db.name], max_files_per_user=3), event_loop_thread),
        USER + 1,
    )
    event_loop_thread.run(client.close())

    root = tmp_path / "files"
    root.mkdir()
    # The records say the bot's container path: mapped onto the empty root, every one is missing.
    sweep(
        strict_db, root, remove_missing_records=True, max_remove="100%",
        records_root="/tmp/bot_code_interpreter/user_files",
    )  # fmt: skip


def test_a_collection_scan_does_fail_on_the_strict_server(strict_db: Database[Any]) -> None:
    strict_db["user_files"].insert_one({"filename": "x"})
    with pytest.raises(OperationFailure, match=r"No query solutions|notablescan"):
        strict_db["user_files"].find_one({"filename": "x"})


@pytest.fixture
def counted(
    mongod: LocalMongod, real_user_files_db: Database[Any]
) -> Iterator[tuple[Database[Any], Commands]]:
    listener = Commands()
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongod.uri, event_listeners=[listener]) as client:
        client.admin.command("ping")
        listener.take()
        yield client[real_user_files_db.name], listener


def round_trips(store: Any, listener: Commands) -> dict[str, list[str]]:
    trips = {}
    for n in range(2):
        store.save_user_file(file_data(USER, n))
    listener.take()
    store.get_user_files(USER)
    trips["get_user_files"] = listener.take()
    store.get_file(file_data(USER, 0)["file_id"], user_id=USER)
    trips["get_file"] = listener.take()
    store.save_user_file(file_data(USER, 2))
    trips["save (no eviction)"] = listener.take()
    store.save_user_file(file_data(USER, 3))
    trips["save (one eviction)"] = listener.take()
    store.delete_user_file(file_data(USER, 3)["file_id"])
    trips["delete_user_file"] = listener.take()
    store.take_file(file_data(USER, 2)["file_id"])
    trips["take_file"] = listener.take()
    store.delete_expired_files()
    trips["delete_expired_files"] = listener.take()
    store.delete_all_user_files(USER)
    trips["delete_all_user_files"] = listener.take()
    return trips


EXPECTED_TRIPS = {
    "get_user_files": ["find"],
    "get_file": ["find"],
    "save (no eviction)": ["findAndModify", "find"],
    "save (one eviction)": ["findAndModify", "find", "findAndModify"],
    "delete_user_file": ["delete"],
    "take_file": ["findAndModify"],
    "delete_expired_files": ["delete", "find"],  # dates on the server; legacy strings decided here
    "delete_all_user_files": ["find", "delete"],
}


def test_round_trips_per_operation_sync(counted: tuple[Database[Any], Commands]) -> None:
    db, listener = counted
    assert round_trips(UserFiles(db, max_files_per_user=3), listener) == EXPECTED_TRIPS


def test_round_trips_per_operation_async(
    mongod: LocalMongod, real_user_files_db: Database[Any], event_loop_thread: EventLoopThread
) -> None:
    listener = Commands()

    async def connect() -> AsyncMongoClient[dict[str, Any]]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri, event_listeners=[listener])
        await client.admin.command("ping")
        return client

    client = event_loop_thread.run(connect())
    listener.take()
    store = SyncOverAsync(
        AsyncUserFiles(client[real_user_files_db.name], max_files_per_user=3), event_loop_thread
    )
    assert round_trips(store, listener) == EXPECTED_TRIPS
    event_loop_thread.run(client.close())


def stages(stage: dict[str, Any], name: str) -> Iterator[dict[str, Any]]:
    """Every stage called ``name`` in an explain tree, outermost first."""
    if stage.get("stage") == name:
        yield stage
    for child in [stage.get("inputStage"), *stage.get("inputStages", [])]:
        if child:
            yield from stages(child, name)


def test_get_user_files_reads_only_what_it_returns_despite_an_expired_backlog(
    counted: tuple[Database[Any], Commands],
) -> None:
    db, listener = counted
    now = dt.datetime.now(UTC)
    collection = db["user_files"]
    backlog = [
        {
            **file_data(USER, n),
            "created_at": now - dt.timedelta(days=3),
            "expires_at": now - dt.timedelta(hours=n % 24 + 1),
        }
        for n in range(100, 3100)
    ]  # expired but not yet deleted by the TTL monitor
    live = [
        {**file_data(USER, n), "created_at": now, "expires_at": now + dt.timedelta(hours=1)} for n in range(5)
    ]
    never = [{**file_data(USER, n), "created_at": now, "expires_at": None} for n in range(5, 8)]
    legacy = [legacy_record(n, USER, now=LEGACY_NOW) for n in range(8, 10)]
    others = [{**file_data(USER + 1, n), "created_at": now, "expires_at": None} for n in range(500)]
    collection.insert_many(backlog + live + never + others)
    collection.insert_many(legacy, bypass_document_validation=True)

    listener.take()
    assert len(UserFiles(db).get_user_files(USER)) == 10
    [sent] = [c["command"] for c in listener.sent if c["name"] == "find"]
    find = {k: v for k, v in sent.items() if k in ("find", "filter", "projection")}
    explained = db.command("explain", find, verbosity="executionStats")
    stats = explained["executionStats"]
    plan = str(explained["queryPlanner"]["winningPlan"])
    assert "IXSCAN" in plan
    assert "COLLSCAN" not in plan
    assert stats["nReturned"] == 10
    # No document is read and then thrown away: every FETCH returns all it examines. (The branch
    # for null expiry fetches to tell null from the obsolete `undefined`; the outer FETCH passes
    # those documents through, so they are counted twice in totalDocsExamined.)
    fetches = list(stages(stats["executionStages"], "FETCH"))
    assert fetches
    assert all(stage["docsExamined"] == stage["nReturned"] for stage in fetches)
    assert fetches[0]["docsExamined"] == 10
    assert stats["totalKeysExamined"] <= 10 + 3  # interval boundaries at most
