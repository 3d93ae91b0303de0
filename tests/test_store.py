"""Behaviour of UserFiles, the same tests on mongomock and on the real server."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pymongo.database import Database

from tests.conftest import Backend, EventLoopThread, MovableClock
from tests.helpers import aware, file_data
from userfiles_db import AsyncUserFiles, FileIdConflict, InvalidFileData, UserFiles

USER = 123456789012345678  # a Discord snowflake: BSON long
OTHER = 42  # a small id: BSON int


def make_store(backend: Backend, clock: MovableClock, **options: Any) -> UserFiles:
    """The API under test (sync, or async driven synchronously) with test defaults."""
    options.setdefault("expiration_hours", 48)
    options.setdefault("max_files_per_user", 20)
    store: UserFiles = backend.make(clock=clock, **options)
    return store


def test_save_then_read_returns_the_canonical_record(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock)
    assert store.save_user_file(file_data(USER, 1)) == []

    [record] = store.get_user_files(USER)
    assert record == {
        **file_data(USER, 1),
        "created_at": clock.now,
        "expires_at": clock.now + dt.timedelta(hours=48),
    }
    assert "_id" not in record
    assert aware(record["created_at"])
    assert aware(record["expires_at"])
    assert store.get_file(record["file_id"]) == record
    assert store.get_file(record["file_id"], user_id=USER) == record


def test_expired_records_are_never_returned_even_before_ttl_deletes_them(
    backend: Backend, clock: MovableClock
) -> None:
    store = make_store(backend, clock)
    store.save_user_file(file_data(USER, 1))
    clock.advance(hours=47, minutes=59)
    assert len(store.get_user_files(USER)) == 1

    clock.advance(minutes=1)  # exactly at expires_at: expired
    assert store.get_user_files(USER) == []
    assert store.get_file(file_data(USER, 1)["file_id"]) is None
    # The record is still stored (the TTL monitor works on the real clock, not ours): only the
    # query's filter hides it.
    assert backend.db["user_files"].count_documents({}) == 1


def test_records_without_expiry_stay_live(backend: Backend, clock: MovableClock) -> None:
    never = make_store(backend, clock, expiration_hours=-1)
    never.save_user_file(file_data(USER, 1))
    default = make_store(backend, clock)
    default.save_user_file(file_data(USER, 2, expires_at=None))  # explicit None: never expires
    backend.db["user_files"].insert_one(  # a record with no expires_at at all (pre-schema)
        {**file_data(USER, 3), "created_at": clock.now}, bypass_document_validation=True
    )
    clock.advance(days=3650)
    live = default.get_user_files(USER)
    assert sorted(r["file_id"] for r in live) == sorted(file_data(USER, n)["file_id"] for n in (1, 2, 3))
    assert live[0]["expires_at"] is None


def test_get_user_files_lists_newest_first(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock)
    for n in range(4):
        store.save_user_file(file_data(USER, n))
        clock.advance(seconds=1)
    assert [r["filename"] for r in store.get_user_files(USER)] == [
        "data3.csv", "data2.csv", "data1.csv", "data0.csv"
    ]  # fmt: skip


def test_reads_and_deletes_are_owner_scoped(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock)
    mine = file_data(USER, 1)
    store.save_user_file(mine)
    store.save_user_file(file_data(OTHER, 2))

    assert [r["file_id"] for r in store.get_user_files(OTHER)] == [file_data(OTHER, 2)["file_id"]]
    assert store.get_file(mine["file_id"], user_id=OTHER) is None
    assert store.delete_user_file(mine["file_id"], user_id=OTHER) is False
    assert store.get_file(mine["file_id"], user_id=USER) is not None

    assert store.delete_user_file(mine["file_id"], user_id=USER) is True
    assert store.delete_user_file(mine["file_id"], user_id=USER) is False
    assert store.get_user_files(USER) == []


def test_a_file_id_of_another_user_is_refused_not_overwritten(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock)
    original = file_data(USER, 1)
    store.save_user_file(original)
    with pytest.raises(FileIdConflict, match="belongs to another user"):
        store.save_user_file({**original, "user_id": OTHER, "filename": "stolen.csv"})
    [record] = backend.db["user_files"].find({}, {"_id": 0})
    assert record["user_id"] == USER
    assert record["filename"] == "data1.csv"
    assert store.get_user_files(OTHER) == []


def test_resaving_updates_without_moving_creation_or_expiry(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock, max_files_per_user=1)
    store.save_user_file(file_data(USER, 1))
    first = store.get_user_files(USER)[0]
    clock.advance(hours=1)
    assert store.save_user_file(file_data(USER, 1, filename="renamed.csv")) == []
    [record] = store.get_user_files(USER)
    assert record["filename"] == "renamed.csv"
    assert record["created_at"] == first["created_at"]
    assert record["expires_at"] == first["expires_at"]


def test_limit_evicts_the_oldest_and_returns_them(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock, max_files_per_user=3)
    evicted: list[list[str]] = []
    for n in range(6):
        evicted.append([r["file_id"] for r in store.save_user_file(file_data(USER, n))])
        clock.advance(seconds=1)
    ids = [file_data(USER, n)["file_id"] for n in range(6)]
    assert evicted == [[], [], [], [ids[0]], [ids[1]], [ids[2]]]
    assert [r["file_id"] for r in store.get_user_files(USER)] == [ids[5], ids[4], ids[3]]


def test_a_save_older_than_the_newest_limit_evicts_itself(backend: Backend, clock: MovableClock) -> None:
    # Issue 9 item 1: one total order (creation time, then file_id); whatever lies past the newest
    # `limit` goes, the record just saved included when it is not among the newest.
    store = make_store(backend, clock, max_files_per_user=2)
    store.save_user_file(file_data(USER, 1))
    clock.advance(seconds=1)
    store.save_user_file(file_data(USER, 2))
    old = file_data(USER, 3, created_at=clock.now - dt.timedelta(days=1))
    evicted = store.save_user_file(old)
    assert [r["file_id"] for r in evicted] == [old["file_id"]]
    assert evicted[0]["file_path"] == old["file_path"]
    assert {r["file_id"] for r in store.get_user_files(USER)} == {
        file_data(USER, 1)["file_id"], file_data(USER, 2)["file_id"]
    }  # fmt: skip


def test_equal_creation_times_are_ordered_by_file_id(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock, max_files_per_user=2)
    for n in (5, 3, 9, 1):  # all at the same instant
        store.save_user_file(file_data(USER, n))
    kept = [r["file_id"] for r in store.get_user_files(USER)]
    ids = sorted((file_data(USER, n)["file_id"] for n in (5, 3, 9, 1)), reverse=True)
    assert kept == ids[:2]


def test_limit_counts_live_records_only(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock, max_files_per_user=2)
    store.save_user_file(file_data(USER, 1, expires_at=clock.now + dt.timedelta(hours=1)))
    store.save_user_file(file_data(USER, 2, expires_at=clock.now + dt.timedelta(hours=1)))
    clock.advance(hours=2)  # both expired, not yet deleted
    assert store.save_user_file(file_data(USER, 3)) == []
    assert store.save_user_file(file_data(USER, 4)) == []
    assert len(store.get_user_files(USER)) == 2


def test_limit_is_per_user(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock, max_files_per_user=1)
    store.save_user_file(file_data(USER, 1))
    assert store.save_user_file(file_data(OTHER, 2)) == []
    assert len(store.get_user_files(USER)) == 1
    assert len(store.get_user_files(OTHER)) == 1


def test_limit_holds_under_concurrent_saves(real_user_files_db: Database[Any], clock: MovableClock) -> None:
    # Real server only: mongomock's find_one_and_delete is not atomic across threads.
    limit, workers, per_worker = 5, 8, 12
    store = UserFiles(real_user_files_db, clock=clock, max_files_per_user=limit)
    evicted: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(workers)

    def upload(worker: int) -> None:
        start.wait()
        for i in range(per_worker):
            gone = store.save_user_file(file_data(USER, worker * 1000 + i))
            with lock:
                evicted.extend(r["file_id"] for r in gone)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(upload, range(workers)))

    remaining = [r["file_id"] for r in store.get_user_files(USER)]
    saved = {file_data(USER, w * 1000 + i)["file_id"] for w in range(workers) for i in range(per_worker)}
    assert len(remaining) <= limit
    assert len(evicted) == len(set(evicted)), "a record was reported evicted twice"
    # Nothing vanished unreported: every saved file is either still there or reported once.
    assert set(remaining) | set(evicted) == saved
    assert not set(remaining) & set(evicted)


def test_delete_all_user_files_returns_every_record_of_the_user(
    backend: Backend, clock: MovableClock
) -> None:
    store = make_store(backend, clock)
    store.save_user_file(file_data(USER, 1, expires_at=clock.now + dt.timedelta(minutes=1)))
    store.save_user_file(file_data(USER, 2))
    store.save_user_file(file_data(OTHER, 3))
    clock.advance(minutes=5)  # file 1 expired but still stored: its file is on disk too

    deleted = store.delete_all_user_files(USER)
    assert sorted(r["file_path"] for r in deleted) == sorted(file_data(USER, n)["file_path"] for n in (1, 2))
    assert all("_id" not in r and aware(r["created_at"]) for r in deleted)
    assert backend.db["user_files"].count_documents({"user_id": USER}) == 0
    assert len(store.get_user_files(OTHER)) == 1
    assert store.delete_all_user_files(USER) == []


def test_delete_expired_files_counts_what_it_deleted(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock)
    store.save_user_file(file_data(USER, 1, expires_at=clock.now + dt.timedelta(hours=1)))
    store.save_user_file(file_data(USER, 2, expires_at=clock.now + dt.timedelta(hours=3)))
    store.save_user_file(file_data(USER, 3, expires_at=None))
    store.save_user_file(file_data(OTHER, 4, expires_at=clock.now + dt.timedelta(hours=1)))
    assert store.delete_expired_files() == 0
    clock.advance(hours=2)
    assert store.delete_expired_files() == 2
    assert store.delete_expired_files() == 0
    assert sorted(backend.db["user_files"].distinct("file_id")) == sorted(
        file_data(USER, n)["file_id"] for n in (2, 3)
    )


def test_naive_datetimes_are_taken_as_utc(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock)
    naive = dt.datetime(2030, 1, 2, 3, 4, 5, 678999)
    store.save_user_file(file_data(USER, 1, created_at=naive, expires_at=None))
    [record] = store.get_user_files(USER)
    # stored with BSON's millisecond precision, returned aware
    assert record["created_at"] == dt.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)


def test_bad_read_arguments_name_the_problem(backend: Backend, clock: MovableClock) -> None:
    store = make_store(backend, clock)
    with pytest.raises(InvalidFileData, match="user_id: must be an int"):
        store.get_user_files("123")  # type: ignore[arg-type]
    with pytest.raises(InvalidFileData, match="file_id: must be a non-empty string"):
        store.get_file("")
    with pytest.raises(InvalidFileData, match="user_id"):
        store.delete_user_file("x", user_id=True)


def test_limit_holds_under_concurrent_async_saves(
    real_user_files_db: Database[Any], async_client: Any, event_loop_thread: EventLoopThread
) -> None:
    limit, uploads = 4, 60
    store = AsyncUserFiles(async_client[real_user_files_db.name], max_files_per_user=limit)

    async def upload_all() -> list[list[dict[str, Any]]]:
        return await asyncio.gather(*(store.save_user_file(file_data(USER, n)) for n in range(uploads)))

    results = event_loop_thread.run(upload_all())
    evicted = [r["file_id"] for result in results for r in result]
    remaining = real_user_files_db["user_files"].distinct("file_id")
    assert len(remaining) <= limit
    assert len(evicted) == len(set(evicted))
    assert set(evicted) | set(remaining) == {file_data(USER, n)["file_id"] for n in range(uploads)}


def test_async_errors_are_the_same_errors(
    real_user_files_db: Database[Any], async_client: Any, event_loop_thread: EventLoopThread
) -> None:
    store = AsyncUserFiles(async_client[real_user_files_db.name])
    event_loop_thread.run(store.save_user_file(file_data(USER, 1)))
    with pytest.raises(FileIdConflict):
        event_loop_thread.run(
            store.save_user_file(file_data(OTHER, 1, file_id=file_data(USER, 1)["file_id"]))
        )
    with pytest.raises(InvalidFileData, match="size: must be at least 0"):
        event_loop_thread.run(store.save_user_file(file_data(USER, 2, size=-1)))
