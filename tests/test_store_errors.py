"""Issue 9 item 8 and issue 8 (d): bad input and bad settings are clear errors (nothing written),
never raw driver errors or a failure on every call; legacy-shaped stragglers are converted on
re-save; a collection without the unique file_id index is refused; DATETIME_MS clients work."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.conftest import Backend, MovableClock
from tests.helpers import file_data
from tests.migration_fixtures import legacy_record
from userfiles_db import ConfigurationError, InvalidFileData, UserFiles
from userfiles_db.clock import UTC
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import Runner, discover
from userfiles_db.migrate.config import bundled_migrations

USER = 123456789012345678
EAST = dt.timezone(dt.timedelta(hours=5))
BAD_RECORDS: list[tuple[str, dict[str, Any], str]] = [
    ("lone surrogate", file_data(USER, 1, filename="data\ud800.csv"), "lone surrogates|cannot be stored"),
    ("lone surrogate key", {**file_data(USER, 1), "\udcff": 1}, "lone surrogates"),
    ("over 16 MiB", file_data(USER, 1, filename="x" * (16 * 1024 * 1024)), "16 MiB"),
    ("created at the end of time", file_data(USER, 1, created_at=dt.datetime.max.replace(tzinfo=UTC)),
     "past the largest storable date"),
    ("created before year 1 in UTC", file_data(USER, 1, created_at=dt.datetime.min.replace(tzinfo=EAST)),
     "created_at: .* cannot be stored as a date"),
    ("expires past year 9999 in UTC",
     file_data(USER, 1, expires_at=dt.datetime.max.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5)))),
     "expires_at: .* cannot be stored as a date"),
    ("unknown origin", file_data(USER, 1, origin="chart"), "origin: must be 'upload' or 'generated'"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "data", "message"), BAD_RECORDS, ids=[c[0] for c in BAD_RECORDS])
def test_bad_records_are_invalid_file_data_and_nothing_is_written(
    backend: Backend, clock: MovableClock, label: str, data: dict[str, Any], message: str
) -> None:
    store = backend.make(clock=clock, expiration_hours=48)
    with pytest.raises(InvalidFileData, match=message):
        store.save_user_file(data)
    assert backend.db["user_files"].count_documents({}) == 0


def test_the_largest_dates_that_fit_are_stored(backend: Backend, clock: MovableClock) -> None:
    store = backend.make(clock=clock)
    end = dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    store.save_user_file(file_data(USER, 1, expires_at=end))
    assert store.get_file(file_data(USER, 1)["file_id"])["expires_at"] == end


@pytest.mark.parametrize("user_id", [2**63, -(2**63) - 1, 2**70])
def test_reads_with_user_ids_beyond_64_bits_are_invalid_file_data(backend: Backend, user_id: int) -> None:
    store = backend.make()
    with pytest.raises(InvalidFileData, match="user_id: must fit in 64 bits"):
        store.get_user_files(user_id)
    with pytest.raises(InvalidFileData, match="user_id"):
        store.get_file("x", user_id=user_id)
    with pytest.raises(InvalidFileData, match="user_id"):
        store.delete_all_user_files(user_id)
    with pytest.raises(InvalidFileData, match="user_id"):
        store.claimed_paths(user_id, ["/a"])


def test_reads_with_a_lone_surrogate_file_id_are_invalid_file_data(backend: Backend) -> None:
    with pytest.raises(InvalidFileData, match="lone surrogates"):
        backend.make().get_file("x\ud800")


def test_a_collection_without_the_unique_index_is_refused_until_migrated(real_db: Database[Any]) -> None:
    # Without `migrate.py up` two records could share a file_id silently: refuse, say what to do.
    store = UserFiles(real_db)
    for _ in range(2):  # a missing index is looked for again (not cached as missing)
        with pytest.raises(ConfigurationError, match=r"no unique index on file_id.*run the migrations"):
            store.save_user_file(file_data(USER, 1))
    assert real_db["user_files"].count_documents({}) == 0
    real_db["user_files"].create_index("file_id", unique=True)
    store.save_user_file(file_data(USER, 1))
    with pytest.raises(InvalidFileData, match="belongs to another user"):
        store.save_user_file(file_data(USER + 1, 1, file_id=file_data(USER, 1)["file_id"]))
    assert real_db["user_files"].count_documents({}) == 1


@pytest.fixture
def migrated(real_db: Database[Any]) -> Database[Any]:
    Runner(real_db, discover(bundled_migrations())).up()
    return real_db


def test_resaving_a_legacy_shaped_record_after_full_migration_converts_it(
    migrated: Database[Any], clock: MovableClock
) -> None:
    # A straggler the old bot wrote after the conversion (the strict validator now refuses any
    # update that leaves it legacy-shaped: code 121 was raised to the caller).
    straggler = legacy_record(1, USER, now=dt.datetime(2030, 1, 1, 12, 0), expires="never")
    migrated["user_files"].insert_one(dict(straggler), bypass_document_validation=True)
    store = UserFiles(migrated, clock=clock)
    canonical = {k: v for k, v in straggler.items() if k not in ("uploaded_at", "file_size", "expires_at")}
    assert store.save_user_file({**canonical, "size": 7, "filename": "renamed.csv"}) == []
    stored = migrated["user_files"].find_one({"file_id": straggler["file_id"]}, {"_id": 0})
    assert stored is not None
    assert "uploaded_at" not in stored
    assert "file_size" not in stored
    assert stored["created_at"] == dt.datetime(2030, 1, 1, 11, 59)  # kept (uploaded 1 min earlier), a date
    assert stored["expires_at"] is None
    assert (stored["size"], stored["filename"]) == (7, "renamed.csv")
    # The old bot's writer dict for the same file is converted too.
    writer = {**straggler, "file_size": 9}
    store.save_user_file(writer)
    assert migrated["user_files"].find_one({"file_id": straggler["file_id"]})["size"] == 9  # type: ignore[index]


def test_a_datetime_ms_client_evicts_the_oldest(
    mongod: LocalMongod, real_user_files_db: Database[Any]
) -> None:
    clock = MovableClock()
    client: MongoClient[dict[str, Any]]
    with MongoClient(mongod.uri, datetime_conversion="DATETIME_MS") as client:
        store = UserFiles(client[real_user_files_db.name], clock=clock, max_files_per_user=2)
        for n in (1, 2, 3):
            evicted = store.save_user_file(file_data(USER, n))
            clock.advance(seconds=1)
        assert [r["file_id"] for r in evicted] == [file_data(USER, 1)["file_id"]]
        records = store.get_user_files(USER)
        assert [r["file_id"] for r in records] == [file_data(USER, n)["file_id"] for n in (3, 2)]
        assert all(isinstance(r["created_at"], dt.datetime) and r["created_at"].tzinfo for r in records)


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        ({}, {"FILE_EXPIRATION_HOURS": "0"}, "FILE_EXPIRATION_HOURS must be greater than 0"),
        ({"expiration_hours": 1e9}, {}, "expiration_hours must be at most 8760000 hours"),
        ({}, {"FILE_EXPIRATION_HOURS": "1e9"}, "FILE_EXPIRATION_HOURS must be at most"),
        ({"timeout_seconds": 0}, {}, "timeout_seconds must be a number of seconds from 0.05 to 3600"),
        ({"timeout_seconds": float("inf")}, {}, "timeout_seconds must be"),
        ({}, {"USERFILES_TIMEOUT_SECONDS": "-1"}, "USERFILES_TIMEOUT_SECONDS must be"),
        ({}, {"USERFILES_TIMEOUT_SECONDS": "fast"}, "USERFILES_TIMEOUT_SECONDS must be"),
        ({}, {"MAX_GENERATED_FILES_PER_USER": "0"}, "MAX_GENERATED_FILES_PER_USER must be a whole number"),
        ({"max_files_per_user": 10**9}, {}, "max_files_per_user must be at most"),
        ({}, {"USERFILES_WRITE_SHAPE": "old"}, "USERFILES_WRITE_SHAPE must be 'canonical' or 'legacy'"),
        ({"write_shape": "legacy", "legacy_timezone": None}, {}, "legacy_timezone cannot be None"),
        ({"legacy_timezone": 5}, {}, "legacy_timezone: must be a timezone name"),
        ({"clock": "now"}, {}, "clock: must be a callable"),
    ],
)
def test_settings_that_would_fail_every_call_fail_at_construction(
    mock_db: Database[Any],
    monkeypatch: pytest.MonkeyPatch,
    options: dict[str, Any],
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        UserFiles(mock_db, **options)


def test_new_settings_come_from_the_environment(
    mock_db: Database[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USERFILES_TIMEOUT_SECONDS", "2.5")
    monkeypatch.setenv("USERFILES_WRITE_SHAPE", "legacy")
    monkeypatch.setenv("MAX_FILES_PER_USER", "7")
    store = UserFiles(mock_db)
    assert (store.timeout_seconds, store.write_shape) == (2.5, "legacy")
    assert (store.max_files_per_user, store.max_generated_files_per_user) == (7, 7)
    monkeypatch.setenv("MAX_GENERATED_FILES_PER_USER", "3")
    assert UserFiles(mock_db).max_generated_files_per_user == 3
    assert UserFiles(mock_db, timeout_seconds=1, write_shape="canonical").timeout_seconds == 1
