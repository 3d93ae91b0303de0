"""Issue 8 (b), (c), (e): the legacy write shape for the rollout, per-origin limits, and
``claimed_paths`` (which files a live record still refers to)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database

from tests.conftest import Backend, MovableClock
from tests.helpers import file_data
from tests.migration_fixtures import create_bot_collection
from userfiles_db import UserFiles
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate.steps import create_collection
from userfiles_db.schema import load_schema

USER = 123456789012345678
OLD_SHAPE = {"_id", "file_id", "user_id", "filename", "file_path", "file_size", "file_type", "uploaded_at",
             "expires_at"}  # fmt: skip


def old_bot_get_user_files(db: Database[Any], user_id: int) -> list[dict[str, Any]]:
    """The unchanged bot's query (database/db_handler.py), naive local ISO strings."""
    now = dt.datetime.now().isoformat()
    query = {"user_id": user_id, "$or": [{"expires_at": {"$gt": now}}, {"expires_at": None}]}
    return list(db["user_files"].find(query))


def test_legacy_write_shape_is_exactly_what_the_old_bot_reads(real_db: Database[Any]) -> None:
    create_bot_collection(real_db, 0, now=dt.datetime(2030, 1, 1))
    store = UserFiles(real_db, write_shape="legacy", expiration_hours=1)
    store.save_user_file(file_data(USER, 1))
    store.save_user_file(file_data(USER, 2, origin="generated"))
    [doc] = real_db["user_files"].find({"file_id": file_data(USER, 1)["file_id"]})
    assert set(doc) == OLD_SHAPE
    assert isinstance(doc["uploaded_at"], str)
    assert isinstance(doc["expires_at"], str)
    created = dt.datetime.fromisoformat(doc["uploaded_at"])  # what /files and the lookup do
    expires = dt.datetime.fromisoformat(doc["expires_at"])
    assert created.tzinfo is None
    assert expires - created == dt.timedelta(hours=1)
    assert doc["file_size"] == file_data(USER, 1)["size"]
    assert len(old_bot_get_user_files(real_db, USER)) == 2
    generated = real_db["user_files"].find_one({"file_id": file_data(USER, 2)["file_id"]})
    assert generated is not None
    assert set(generated) == OLD_SHAPE | {"origin"}
    # The new code reads the same records, canonical.
    assert {r["file_id"] for r in store.get_user_files(USER)} == {
        file_data(USER, n)["file_id"] for n in (1, 2)
    }
    never = UserFiles(real_db, write_shape="legacy", expiration_hours=-1)
    never.save_user_file(file_data(USER, 3))
    assert real_db["user_files"].find_one({"file_id": file_data(USER, 3)["file_id"]})["expires_at"] is None  # type: ignore[index]


def test_legacy_write_shape_re_save_of_a_canonical_record_leaves_one_shape(real_db: Database[Any]) -> None:
    create_bot_collection(real_db, 0, now=dt.datetime(2030, 1, 1))
    UserFiles(real_db).save_user_file(file_data(USER, 1))
    UserFiles(real_db, write_shape="legacy").save_user_file(file_data(USER, 1, size=5))
    doc = real_db["user_files"].find_one({"file_id": file_data(USER, 1)["file_id"]})
    assert doc is not None
    assert set(doc) == OLD_SHAPE
    assert doc["file_size"] == 5


def test_legacy_write_shape_falls_back_to_canonical_under_the_strict_validator(
    real_user_files_db: Database[Any], caplog: pytest.LogCaptureFixture
) -> None:
    store = UserFiles(real_user_files_db, write_shape="legacy")
    with caplog.at_level(logging.WARNING, logger="userfiles_db.store"):
        store.save_user_file(file_data(USER, 1))
        store.save_user_file(file_data(USER, 2))
    warnings = [r for r in caplog.records if "validator refuses the legacy shape" in r.getMessage()]
    assert len(warnings) == 1
    for doc in real_user_files_db["user_files"].find():
        assert "uploaded_at" not in doc
        assert isinstance(doc["created_at"], dt.datetime)


def test_generated_files_never_evict_uploads(backend: Backend, clock: MovableClock) -> None:
    store = backend.make(clock=clock, max_files_per_user=2, max_generated_files_per_user=1)
    uploads = [file_data(USER, n) for n in (1, 2)]
    for data in uploads:
        assert store.save_user_file(data) == []
        clock.advance(seconds=1)
    charts = [file_data(USER, n, origin="generated") for n in (3, 4, 5)]
    evicted = []
    for data in charts:
        evicted += [r["file_id"] for r in store.save_user_file(data)]
        clock.advance(seconds=1)
    assert evicted == [charts[0]["file_id"], charts[1]["file_id"]]
    kept = {r["file_id"]: r.get("origin", "upload") for r in store.get_user_files(USER)}
    assert kept == {
        uploads[0]["file_id"]: "upload",
        uploads[1]["file_id"]: "upload",
        charts[2]["file_id"]: "generated",
    }
    # ... and uploads evict only uploads (an explicit "upload" counts as one).
    assert [r["file_id"] for r in store.save_user_file(file_data(USER, 6, origin="upload"))] == [
        uploads[0]["file_id"]
    ]
    assert len(store.get_user_files(USER)) == 3


def test_the_generated_limit_defaults_to_the_upload_limit(backend: Backend, clock: MovableClock) -> None:
    store = backend.make(clock=clock, max_files_per_user=2)
    for n in range(3):
        store.save_user_file(file_data(USER, n, origin="generated"))
        clock.advance(seconds=1)
    assert len(store.get_user_files(USER)) == 2


@pytest.fixture
def strict_db(strict_mongod: LocalMongod) -> Iterator[Database[Any]]:
    """A database on the server that refuses collection scans (notablescan)."""
    with strict_mongod.client() as client:
        db = client[f"s_{uuid.uuid4().hex[:12]}"]
        create_collection(db, load_schema())
        yield db
        client.drop_database(db.name)


def test_claimed_paths_is_one_indexed_round_trip(strict_db: Database[Any]) -> None:
    clock = MovableClock()
    store = UserFiles(strict_db, clock=clock, max_files_per_user=10)
    shared = "/tmp/bot_code_interpreter/user_files/1/data.csv"
    store.save_user_file(file_data(USER, 1, file_path=shared))
    store.save_user_file(file_data(USER, 2, file_path=shared))  # the README's <user>/<name> scheme
    store.save_user_file(file_data(USER, 3, expires_at=clock.now + dt.timedelta(minutes=1)))
    store.save_user_file(file_data(USER + 1, 4, file_path="/elsewhere"))
    paths = [shared, file_data(USER, 3)["file_path"], "/elsewhere", "/never/saved"]
    assert store.claimed_paths(USER, paths) == {shared, file_data(USER, 3)["file_path"]}
    store.take_file(file_data(USER, 1)["file_id"])
    assert store.claimed_paths(USER, [shared]) == {shared}  # record 2 still refers to it
    store.take_file(file_data(USER, 2)["file_id"])
    assert store.claimed_paths(USER, [shared]) == set()
    clock.advance(minutes=2)  # record 3 expired (not yet deleted): its file is no longer claimed
    assert store.claimed_paths(USER, paths) == set()
    assert store.claimed_paths(USER, []) == set()


def test_claimed_paths_async(backend: Backend) -> None:
    store = backend.make()
    store.save_user_file(file_data(USER, 1))
    assert store.claimed_paths(USER, {file_data(USER, 1)["file_path"], "/x"}) == {
        file_data(USER, 1)["file_path"]
    }


def test_legacy_writes_resume_as_soon_as_the_validator_accepts_them_again(real_db: Database[Any]) -> None:
    """A rollback: the strict validator refuses legacy writes, then `down` relaxes it; the very
    next save is legacy-shaped again, so an old bot sees it."""
    create_collection(real_db, load_schema())  # strict validator, as after migration 0004
    store = UserFiles(real_db, write_shape="legacy", expiration_hours=48)
    store.save_user_file(file_data(7, 1))
    first = real_db["user_files"].find_one({"file_id": file_data(7, 1)["file_id"]})
    assert first is not None
    assert isinstance(first["created_at"], dt.datetime)  # refused as legacy: stored canonical
    real_db.command("collMod", "user_files", validationLevel="moderate", validationAction="warn")
    store.save_user_file(file_data(7, 2))
    stored = real_db["user_files"].find_one({"file_id": file_data(7, 2)["file_id"]})
    assert stored is not None
    assert isinstance(stored["uploaded_at"], str)
    assert "created_at" not in stored
