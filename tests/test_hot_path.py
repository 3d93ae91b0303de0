"""The hot path of get_user_files (issue 12): no per-record Python calls for canonical records,
exactly the general rules' results for every other shape, and the async runner's guarantees
(a cancel waits for the call in flight; the backstop bounds a hung driver) after its rewrite.
Nothing here is timed: costs are counted (function calls), outcomes asserted."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import sys
import zoneinfo
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
from bson.tz_util import utc as BSON_UTC
from hypothesis import given, settings
from hypothesis import strategies as st
from pymongo.database import Database

import userfiles_db
from userfiles_db import DatabaseUnavailable, UserFiles
from userfiles_db.clock import UTC
from userfiles_db.ops import Find, run_async
from userfiles_db.records import LegacyTime, as_utc, is_live, live_newest_first, newest_first

PACKAGE = str(Path(userfiles_db.__file__).parent)
NOW = dt.datetime(2031, 3, 1, 12, tzinfo=UTC)


def record(i: int, user: int = 7) -> dict[str, Any]:
    return {
        "file_id": f"{user}_{i:04d}",
        "user_id": user,
        "filename": f"{i}.csv",
        "file_type": "csv",
        "file_path": f"/files/{user}/{i}.csv",
        "size": i,
        "created_at": (NOW - dt.timedelta(minutes=i)).replace(tzinfo=None),
        "expires_at": (NOW + dt.timedelta(hours=1 + i)).replace(tzinfo=None),
    }


@contextmanager
def counting_package_calls() -> Iterator[list[int]]:
    """Counts Python function calls into userfiles_db while active."""
    count = [0]

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            count[0] += 1

    sys.setprofile(profile)
    try:
        yield count
    finally:
        sys.setprofile(None)


def test_get_user_files_makes_no_python_call_per_canonical_record(real_user_files_db: Database[Any]) -> None:
    # The listing used to normalise each record with several calls (normalize, as_utc twice,
    # order_key, is_live): its Python cost grew with the records. Now it is flat.
    collection = real_user_files_db["user_files"]
    collection.insert_many([record(i, user=1) for i in range(3)] + [record(i, user=2) for i in range(60)])
    store = UserFiles(real_user_files_db, max_files_per_user=100)
    store.get_user_files(1)  # warm: connection, index check caches
    with counting_package_calls() as few:
        small = store.get_user_files(1)
    with counting_package_calls() as many:
        large = store.get_user_files(2)
    assert len(small) == 3
    assert len(large) == 60
    assert many[0] == few[0]
    assert [r["file_id"] for r in large] == [f"2_{i:04d}" for i in range(60)]  # newest first
    assert all(r["created_at"].tzinfo is UTC and "_id" not in r for r in large)


# --- The fast path gives exactly what the general rules give, whatever the records look like ---

_moments = st.integers(min_value=-10_000, max_value=10_000).map(lambda s: NOW + dt.timedelta(seconds=s))


def _date(moment: dt.datetime, style: str) -> Any:
    if style == "naive":
        return moment.replace(tzinfo=None)
    if style == "utc":
        return moment
    if style == "bson_utc":
        return moment.astimezone(BSON_UTC)
    if style == "zone":
        return moment.astimezone(zoneinfo.ZoneInfo("Europe/Paris"))
    return moment.replace(tzinfo=None).isoformat()  # "string": a legacy record


_styles = st.sampled_from(["naive", "naive", "naive", "utc", "bson_utc", "zone", "string"])


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    i = draw(st.integers(min_value=0, max_value=30))
    doc: dict[str, Any] = {"_id": draw(st.integers()), **record(i)}
    doc["file_id"] = draw(st.sampled_from([doc["file_id"], "same", "same2"]))
    doc["created_at"] = _date(draw(_moments), draw(_styles))
    expires = draw(st.sampled_from(["date", "date", "none", "missing"]))
    if expires == "none":
        doc["expires_at"] = None
    elif expires == "missing":
        del doc["expires_at"]
    else:
        doc["expires_at"] = _date(draw(_moments), draw(_styles))
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        doc["origin"] = "generated"  # a canonical field: stays on the fast path
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        doc["uploaded_at"] = doc.pop("created_at")  # legacy names
    if draw(st.integers(min_value=0, max_value=19)) == 0:
        return OrderedDict(doc)  # not a plain dict: the general path
    return doc


@settings(max_examples=300, deadline=None)
@given(docs=st.lists(documents(), max_size=12), now=_moments)
def test_live_newest_first_is_exactly_the_general_rules(docs: list[dict[str, Any]], now: dt.datetime) -> None:
    legacy = LegacyTime.named("UTC")
    expected = [
        r for r, _ in newest_first([d for d in copy.deepcopy(docs) if is_live(d, now, legacy)], legacy)
    ]
    got = live_newest_first(copy.deepcopy(docs), now, legacy)
    assert got == expected
    assert [type(r) for r in got] == [dict] * len(got)
    for mine, theirs in zip(got, expected, strict=True):
        for name in ("created_at", "expires_at"):
            if isinstance(theirs.get(name), dt.datetime):
                assert mine[name].utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    "value",
    [dt.datetime.min, dt.datetime.max, dt.datetime(1970, 1, 1), dt.datetime(2038, 1, 19, 3, 14, 7, 999000)],
)
def test_as_utc_by_arithmetic_is_replace(value: dt.datetime) -> None:
    made = as_utc(value)
    assert made == value.replace(tzinfo=UTC)
    assert made.tzinfo is UTC
    assert type(made) is dt.datetime


# --- The async runner after its rewrite: the same guarantees ---------------------------------


class SlowCollection:
    """An async collection whose find answers after ``delay`` seconds (or never: ``None``)."""

    def __init__(self, delay: float | None) -> None:
        self.delay = delay
        self.finished = 0

    def find(self, query: Any, projection: Any = None) -> SlowCollection:
        return self

    async def to_list(self, length: Any) -> list[dict[str, Any]]:
        if self.delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay or 0)
        self.finished += 1
        return [{"answer": 42}]


def _plan(seen: list[Any]) -> Any:
    docs = yield Find({})
    seen.append(docs)
    yield Find({})  # never sent after a cancel
    return docs


def test_a_cancel_waits_for_the_call_in_flight_and_hands_it_to_the_plan() -> None:
    async def main() -> tuple[list[Any], int]:
        collection = SlowCollection(0.2)
        seen: list[Any] = []
        task = asyncio.ensure_future(run_async(collection, _plan(seen), timeout=10))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        return seen, collection.finished

    seen, finished = asyncio.run(main())
    assert seen == [[{"answer": 42}]]  # the call finished and the plan got its result
    assert finished == 1  # and the second call was never made


def test_the_backstop_bounds_a_driver_that_never_answers() -> None:
    async def main() -> None:
        with pytest.raises(DatabaseUnavailable, match=r"get: the database did not answer within 0.2 s"):
            await asyncio.wait_for(
                run_async(SlowCollection(None), _plan([]), operation="get", timeout=0.2), 10
            )
        await asyncio.sleep(0.05)  # the abandoned call's task ends on its cancel
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

    asyncio.run(main())


def test_a_driver_error_reaches_the_plan_translated() -> None:
    class Failing(SlowCollection):
        async def to_list(self, length: Any) -> list[dict[str, Any]]:
            raise ValueError("boom")

    async def main() -> None:
        with pytest.raises(ValueError, match="boom"):
            await run_async(Failing(0), _plan([]), timeout=1)

    asyncio.run(main())


def test_generated_files_keep_the_fast_path() -> None:
    """``origin`` is a canonical field (review: one generated record sent the whole list down the
    general path); the fast listing still equals the general rules."""
    now = dt.datetime(2026, 1, 1, tzinfo=UTC)
    docs = [
        {"_id": n, "file_id": f"f{n}", "user_id": 1, "filename": "a", "file_type": "csv",
         "file_path": "/p", "size": 1, "created_at": dt.datetime(2025, 12, n + 1),
         "expires_at": None, **({"origin": "generated"} if n % 2 else {})}
        for n in range(6)
    ]  # fmt: skip
    general = [record for record, _ in newest_first(copy.deepcopy(docs), LegacyTime.named("UTC"))]
    assert live_newest_first(copy.deepcopy(docs), now, LegacyTime.named("UTC")) == general
