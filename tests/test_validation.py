"""Malformed file_data: always InvalidFileData naming the problem, and nothing written."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.database import Database

from tests.conftest import Backend, MovableClock
from tests.helpers import file_data
from userfiles_db import InvalidFileData, UserFiles, UserFilesError
from userfiles_db.migrate.steps import create_indexes
from userfiles_db.schema import load_schema

BASE = file_data(99, 1)


def snapshot(db: Database[Any]) -> list[dict[str, Any]]:
    return list(db["user_files"].find({}, sort=[("_id", 1)]))


DT = "must be a datetime"
NON_STRING_KEY: dict[Any, Any] = {**BASE, 5: 1}
CASES: list[tuple[str, object, str]] = [
    ("not a dict", ["file_id", "x"], "file_data: must be a dict"),
    ("None", None, "file_data: must be a dict"),
    ("missing file_id", {k: v for k, v in BASE.items() if k != "file_id"}, "file_id: required"),
    ("empty file_id", {**BASE, "file_id": ""}, "file_id: must be at least 1"),
    ("int file_id", {**BASE, "file_id": 12}, "file_id: must be of type string"),
    ("missing user_id", {k: v for k, v in BASE.items() if k != "user_id"}, "user_id: required"),
    ("string user_id", {**BASE, "user_id": "99"}, "user_id: must be of type int or long"),
    ("bool user_id", {**BASE, "user_id": True}, "user_id: must be of type int or long"),
    ("float user_id", {**BASE, "user_id": 99.0}, "user_id: must be of type int or long"),
    ("huge user_id", {**BASE, "user_id": 2**64}, "user_id: must be of type int or long"),
    ("negative size", {**BASE, "size": -1}, "size: must be at least 0"),
    ("string size", {**BASE, "size": "1024"}, "size: must be of type int or long"),
    ("missing size", {k: v for k, v in BASE.items() if k != "size"}, "size: required"),
    ("int filename", {**BASE, "filename": 5}, "filename: must be of type string"),
    ("none file_path", {**BASE, "file_path": None}, "file_path: must be of type string"),
    ("str expires_at", {**BASE, "expires_at": "2025-10-02T21:49:00"}, "expires_at: " + DT),
    ("str created_at", {**BASE, "created_at": "2025-10-02T21:49:00"}, "created_at: " + DT),
    ("date created_at", {**BASE, "created_at": dt.date(2025, 1, 1)}, "created_at: " + DT),
    ("epoch expires_at", {**BASE, "expires_at": 1700000000}, "expires_at: " + DT),
    ("_id given", {**BASE, "_id": "x"}, "_id: is managed by the database"),
    ("operator key", {**BASE, "$set": {}}, "field names must be"),
    ("dotted key", {**BASE, "a.b": 1}, "field names must be"),
    ("non-string key", NON_STRING_KEY, "field names must be"),
    ("unencodable extra", {**BASE, "extra": object()}, "cannot be stored in MongoDB"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "data", "message"), CASES, ids=[c[0] for c in CASES])
def test_malformed_file_data_is_refused_and_nothing_written(
    backend: Backend, clock: MovableClock, label: str, data: object, message: str
) -> None:
    store = backend.make(clock=clock, expiration_hours=48, max_files_per_user=20)
    store.save_user_file(file_data(99, 0))
    before = snapshot(backend.db)
    with pytest.raises(InvalidFileData, match=message.replace("$", r"\$")) as info:
        store.save_user_file(data)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, UserFilesError)
    assert snapshot(backend.db) == before


_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dates(),
)
_fields = st.sampled_from([*sorted(BASE), "created_at", "expires_at"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.one_of(
        # a valid record with one to three fields replaced by junk (at least one must break it)
        st.dictionaries(_fields, _junk, min_size=1, max_size=3).map(lambda junk: {**BASE, **junk}),
        # a valid record with fields removed
        st.sets(st.sampled_from(sorted(BASE)), min_size=1).map(
            lambda gone: {k: v for k, v in BASE.items() if k not in gone}
        ),
        # not a mapping at all
        _junk,
    )
)
def test_any_malformed_file_data_raises_invalid_file_data(mock_db: Database[Any], data: object) -> None:
    create_indexes(mock_db["user_files"], load_schema())
    store = UserFiles(mock_db, expiration_hours=48, max_files_per_user=20)
    before = snapshot(mock_db)
    try:
        store.save_user_file(data)  # type: ignore[arg-type]
    except InvalidFileData as exc:
        assert str(exc)
        assert snapshot(mock_db) == before
    else:
        # Only junk that happens to be valid may pass (a string filename, a positive size, ...).
        assert isinstance(data, dict)
        assert mock_db["user_files"].count_documents({"file_id": data["file_id"]}) == 1
        mock_db["user_files"].delete_many({})
