"""The declared schema on the real server: accepted, enforced, TTL really deleting."""

from __future__ import annotations

import datetime as dt
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.database import Database
from pymongo.errors import WriteError

from tests.helpers import file_data, save_many_in_process
from userfiles_db import UserFiles, load_schema
from userfiles_db.clock import UTC
from userfiles_db.local_server import LocalMongod

NOW = dt.datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


def valid_record(**overrides: Any) -> dict[str, Any]:
    record = {**file_data(777, 1), "created_at": NOW, "expires_at": NOW + dt.timedelta(hours=48)}
    record.update(overrides)
    return record


def test_validator_and_indexes_from_schema_are_accepted(real_user_files_db: Database[Any]) -> None:
    schema = load_schema()
    [info] = real_user_files_db.list_collections(filter={"name": "user_files"})
    assert info["options"]["validator"] == schema.validator
    assert info["options"]["validationLevel"] == "strict"
    assert info["options"]["validationAction"] == "error"

    indexes = real_user_files_db["user_files"].index_information()
    assert indexes["file_id_1"]["key"] == [("file_id", 1)]
    assert indexes["file_id_1"]["unique"] is True
    assert indexes["user_id_1_expires_at_-1"]["key"] == [("user_id", 1), ("expires_at", -1)]
    assert indexes["expires_at_1"]["key"] == [("expires_at", 1)]
    assert indexes["expires_at_1"]["expireAfterSeconds"] == 0
    assert set(indexes) == {"_id_", "file_id_1", "user_id_1_expires_at_-1", "expires_at_1"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", -1),
        ("user_id", "123"),
        ("file_id", ""),
        ("expires_at", "2025-10-02T21:49:00.123456"),  # the bot's legacy string date
        ("created_at", None),
    ],
)
def test_raw_insert_breaking_the_schema_is_rejected_with_121(
    real_user_files_db: Database[Any], field: str, value: object
) -> None:
    with pytest.raises(WriteError) as info:
        real_user_files_db["user_files"].insert_one(valid_record(**{field: value}))
    assert info.value.code == 121
    assert real_user_files_db["user_files"].count_documents({}) == 0


def test_extra_fields_and_long_ids_are_let_through(real_user_files_db: Database[Any]) -> None:
    real_user_files_db["user_files"].insert_one(
        valid_record(user_id=2**62, size=2**40, expires_at=None, checksum="abc")
    )
    assert real_user_files_db["user_files"].count_documents({}) == 1


def test_ttl_monitor_really_deletes_an_expired_record(real_user_files_db: Database[Any]) -> None:
    store = UserFiles(real_user_files_db, expiration_hours=48)
    now = dt.datetime.now(UTC)
    store.save_user_file(file_data(777, 1, expires_at=now + dt.timedelta(seconds=1)))
    store.save_user_file(file_data(777, 2, expires_at=None))
    store.save_user_file(file_data(777, 3))  # 48 h from now
    collection = real_user_files_db["user_files"]
    deadline = time.monotonic() + 20
    while collection.count_documents({}) == 3 and time.monotonic() < deadline:
        time.sleep(0.25)
    remaining = sorted(collection.distinct("file_id"))
    assert remaining == sorted(file_data(777, n)["file_id"] for n in (2, 3))


# A document for the differential test: mostly valid records with one field disturbed.
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2100, 1, 1)),
)
_fields = st.sampled_from(
    ["file_id", "user_id", "filename", "file_type", "file_path", "size", "created_at", "expires_at"]
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(changes=st.dictionaries(_fields, _values, max_size=3), dropped=st.sets(_fields, max_size=2))
def test_python_checker_agrees_with_the_server_validator(
    real_user_files_db: Database[Any], changes: dict[str, Any], dropped: set[str]
) -> None:
    record = valid_record(**changes)
    for name in dropped:
        record.pop(name, None)
    client_ok = load_schema().problems(record) == []
    collection = real_user_files_db["user_files"]
    try:
        collection.insert_one(dict(record))
        server_ok = True
    except WriteError as exc:
        assert exc.code in (121, 11000)
        server_ok = exc.code != 121
    collection.delete_many({})
    assert client_ok == server_ok, (record, load_schema().problems(record))


def test_limit_holds_across_processes(real_user_files_db: Database[Any], mongod: LocalMongod) -> None:
    limit, workers, per_worker = 4, 6, 10
    jobs = [list(range(w * 100, w * 100 + per_worker)) for w in range(workers)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        results = list(
            pool.map(
                save_many_in_process,
                [mongod.uri] * workers,
                [real_user_files_db.name] * workers,
                [555] * workers,
                jobs,
                [limit] * workers,
            )
        )
    evicted = [file_id for result in results for file_id in result]
    remaining = real_user_files_db["user_files"].distinct("file_id")
    saved = {file_data(555, n)["file_id"] for job in jobs for n in job}
    assert len(remaining) <= limit
    assert len(evicted) == len(set(evicted)), "a record was reported evicted twice"
    assert set(evicted) | set(remaining) == saved
    assert not set(evicted) & set(remaining)
