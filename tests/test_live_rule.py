"""Property test: get_user_files equals a plain Python model of the live rule."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo.database import Database

from tests.conftest import MovableClock
from userfiles_db import UserFiles
from userfiles_db.clock import UTC

START = dt.datetime(2031, 3, 1, tzinfo=UTC)
USERS = [1, 2, 2**40]

_offsets = st.integers(min_value=-5000, max_value=5000)  # seconds around START
_record = st.tuples(
    st.sampled_from(USERS),
    st.one_of(st.none(), _offsets),  # expires_at: never, or START + offset
    _offsets,  # created_at
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_record, max_size=25), now_offset=_offsets, user=st.sampled_from(USERS))
def test_get_user_files_matches_the_model(
    backend_db: Database[Any], rows: list[tuple[int, int | None, int]], now_offset: int, user: int
) -> None:
    collection = backend_db["user_files"]
    collection.delete_many({})
    documents: list[dict[str, Any]] = [
        {
            "file_id": f"f{i}",
            "user_id": owner,
            "filename": f"{i}.txt",
            "file_type": "text",
            "file_path": f"/files/{i}.txt",
            "size": i,
            "created_at": START + dt.timedelta(seconds=created),
            "expires_at": None if expires is None else START + dt.timedelta(seconds=expires),
        }
        for i, (owner, expires, created) in enumerate(rows)
    ]
    if documents:
        collection.insert_many([dict(d) for d in documents])
    now = START + dt.timedelta(seconds=now_offset)
    store = UserFiles(backend_db, clock=MovableClock(now), max_files_per_user=100)

    def live(doc: dict[str, Any]) -> bool:
        return doc["user_id"] == user and (doc["expires_at"] is None or doc["expires_at"] > now)

    def created(doc: dict[str, Any]) -> dt.datetime:
        value: dt.datetime = doc["created_at"]
        return value

    expected = sorted(filter(live, documents), key=created, reverse=True)
    got = store.get_user_files(user)
    assert [d["file_id"] for d in got] == [d["file_id"] for d in expected] or (
        # equal created_at: any order among the ties is the model's
        sorted(str(d["file_id"]) for d in got) == sorted(str(d["file_id"]) for d in expected)
        and [d["created_at"] for d in got] == [d["created_at"] for d in expected]
    )
