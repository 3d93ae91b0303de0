"""Records in the bot's legacy shape, inserted raw as its writer does, before any migration."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from tests.conftest import Backend, MovableClock
from tests.migration_fixtures import legacy_record
from userfiles_db import InvalidFileData, UserFiles
from userfiles_db.clock import UTC
from userfiles_db.migrate.steps import create_indexes
from userfiles_db.schema import load_schema

USER = 10**17 + 1


def insert_legacy(backend: Backend, *records: dict[str, Any]) -> None:
    # The bot's own upsert, bypassing the validator a migrated database may have (in warn mode
    # during the rollout it would only log).
    for record in records:
        backend.db["user_files"].update_one(
            {"file_id": record["file_id"]}, {"$set": record}, upsert=True, bypass_document_validation=True
        )


def test_legacy_records_are_read_filtered_and_canonical(backend: Backend, clock: MovableClock) -> None:
    now = clock.now.replace(tzinfo=None)  # the bot's naive UTC
    live = legacy_record(1, USER, now=now)
    expired = legacy_record(2, USER, now=now, expires="expired")
    never = legacy_record(3, USER, now=now, expires="never")
    insert_legacy(backend, live, expired, never)
    store = backend.make(clock=clock)

    records = store.get_user_files(USER)
    assert [r["file_id"] for r in records] == [live["file_id"], never["file_id"]]  # newest first
    first = records[0]
    assert first["size"] == live["file_size"]
    assert "file_size" not in first
    assert "uploaded_at" not in first
    assert first["created_at"] == dt.datetime.fromisoformat(live["uploaded_at"]).replace(
        tzinfo=UTC, microsecond=dt.datetime.fromisoformat(live["uploaded_at"]).microsecond // 1000 * 1000
    )
    assert first["expires_at"].tzinfo is not None
    assert records[1]["expires_at"] is None
    assert store.get_file(expired["file_id"]) is None
    assert store.get_file(live["file_id"], user_id=USER) == first

    clock.advance(hours=49)  # the live one's string expiry passes too
    assert [r["file_id"] for r in store.get_user_files(USER)] == [never["file_id"]]
    assert store.delete_expired_files() == 2


def test_legacy_records_count_for_the_limit_and_are_evicted_oldest_first(
    backend: Backend, clock: MovableClock
) -> None:
    now = clock.now.replace(tzinfo=None)
    old, newer = legacy_record(30, USER, now=now), legacy_record(10, USER, now=now)  # 30 min, 10 min ago
    insert_legacy(backend, old, newer)
    store = backend.make(clock=clock, max_files_per_user=2)
    evicted = store.save_user_file(legacy_record(0, USER, now=now))  # the writer's dict, as is
    assert [r["file_id"] for r in evicted] == [old["file_id"]]
    assert evicted[0]["size"] == old["file_size"]


def test_the_bots_writer_dict_is_stored_canonical(backend: Backend, clock: MovableClock) -> None:
    now = clock.now.replace(tzinfo=None)
    store = backend.make(clock=clock)
    writer = legacy_record(5, USER, now=now)
    assert store.save_user_file(writer) == []
    stored = backend.db["user_files"].find_one({"file_id": writer["file_id"]}, {"_id": 0})
    assert stored is not None
    assert set(stored) == {"file_id", "user_id", "filename", "file_path", "size", "file_type",
                           "created_at", "expires_at"}  # fmt: skip
    assert isinstance(stored["created_at"], dt.datetime)
    assert isinstance(stored["expires_at"], dt.datetime)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"uploaded_at": "yesterday"}, "created_at: not an ISO-8601 date string"),
        ({"expires_at": "2025-13-45T00:00:00"}, "expires_at: not an ISO-8601 date string"),
        ({"size": 5}, "file_size: give file_size or size, not both"),
    ],
)
def test_bad_legacy_writer_dicts_are_refused(
    mock_db: Any, clock: MovableClock, changes: dict[str, Any], message: str
) -> None:
    store = UserFiles(mock_db, clock=clock)
    with pytest.raises(InvalidFileData, match=message):
        store.save_user_file({**legacy_record(1, USER, now=clock.now.replace(tzinfo=None)), **changes})
    assert mock_db["user_files"].count_documents({}) == 0


def test_legacy_timezone_is_configurable(mock_db: Any) -> None:
    record = legacy_record(1, USER, now=dt.datetime(2030, 1, 1, 12, 0), expires="never")
    mock_db["user_files"].insert_one(record)
    store = UserFiles(mock_db, legacy_timezone="Europe/Berlin")
    [read] = store.get_user_files(USER)
    assert read["created_at"] == dt.datetime(2030, 1, 1, 10, 59, tzinfo=UTC)  # 11:59 CET
    with pytest.raises(Exception, match="unknown timezone"):
        UserFiles(mock_db, legacy_timezone="Mars/Olympus")


def test_after_adoption_queries_skip_the_string_branch(mock_db: Any, clock: MovableClock) -> None:
    now = clock.now.replace(tzinfo=None)
    create_indexes(mock_db["user_files"], load_schema())
    mock_db["user_files"].insert_one(legacy_record(1, USER, now=now))  # a straggler, string expiry
    store = UserFiles(mock_db, clock=clock, legacy_timezone=None)
    store.save_user_file(legacy_record(2, USER, now=now))  # the writer dict: still accepted (UTC)
    assert [r["file_id"] for r in store.get_user_files(USER)] == [legacy_record(2, USER, now=now)["file_id"]]
    with_strings = UserFiles(mock_db, clock=clock).get_user_files(USER)  # the default reads both
    assert len(with_strings) == 2
