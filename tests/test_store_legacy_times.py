"""Issue 9 item 4 and issue 8 (a): legacy date strings are read as times, not compared as text.

Other ISO spellings (offsets, Z, a space, basic format), sub-millisecond digits and DST in a
non-UTC legacy zone; a time the store cannot decide exactly is never deleted by the fallback
clean-up and never returned as live; the store reads ambiguous times as migration 0002 converts
them. Naive strings in the bot's writer dict are the calling process's local time."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo.database import Database

from tests import helpers
from tests.conftest import Backend, MovableClock
from tests.migration_fixtures import legacy_record
from userfiles_db import UserFiles
from userfiles_db.clock import UTC
from userfiles_db.migrate.steps import convert_legacy_records
from userfiles_db.records import LegacyTime, is_live, parse_iso

USER = 10**17 + 7


def spellings(moment: dt.datetime) -> dict[str, str]:
    """``moment`` (aware) as the legacy writers spell it."""
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    return {
        "+02:00": moment.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(),
        "-05:00": moment.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat(),
        "Z": utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "space": utc.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "basic": utc.strftime("%Y%m%dT%H%M%S"),
        "basic Z": utc.strftime("%Y%m%dT%H%M%SZ"),
        "+0530 basic offset": moment.astimezone(dt.timezone(dt.timedelta(hours=5, minutes=30))).strftime(
            "%Y-%m-%dT%H:%M:%S%z"
        ),
    }


def insert_raw(backend: Backend, *docs: dict[str, Any]) -> None:
    backend.db["user_files"].insert_many([dict(doc) for doc in docs], bypass_document_validation=True)


def with_expiry(n: int, expires: str | None, now: dt.datetime) -> dict[str, Any]:
    record = legacy_record(n, USER, now=now.replace(tzinfo=None))
    record["expires_at"] = expires
    return record


@pytest.mark.parametrize("spelling", list(spellings(dt.datetime.now(UTC))))
def test_other_iso_spellings_are_read_as_times(backend: Backend, clock: MovableClock, spelling: str) -> None:
    live = with_expiry(1, spellings(clock.now + dt.timedelta(minutes=30))[spelling], clock.now)
    expired = with_expiry(2, spellings(clock.now - dt.timedelta(minutes=30))[spelling], clock.now)
    insert_raw(backend, live, expired)
    store = backend.make(clock=clock, max_files_per_user=100)
    assert [r["file_id"] for r in store.get_user_files(USER)] == [live["file_id"]]
    assert store.get_file(expired["file_id"]) is None
    assert store.get_file(live["file_id"])["expires_at"] == (clock.now + dt.timedelta(minutes=30))
    assert store.claimed_paths(USER, [live["file_path"], expired["file_path"]]) == {live["file_path"]}
    assert store.delete_expired_files() == 1
    assert backend.db["user_files"].distinct("file_id") == [live["file_id"]]


def test_sub_millisecond_digits_follow_bson_precision(backend: Backend, clock: MovableClock) -> None:
    # "...00.000400" names a time 0.4 ms after now; BSON (and migration 0002) keep milliseconds,
    # so it is now: expired. As text it was later than now's string, so it stayed live.
    at_now = (clock.now + dt.timedelta(microseconds=400)).replace(tzinfo=None).isoformat()
    just_after = (clock.now + dt.timedelta(milliseconds=1)).replace(tzinfo=None).isoformat()
    insert_raw(backend, with_expiry(1, at_now, clock.now), with_expiry(2, just_after, clock.now))
    store = backend.make(clock=clock)
    assert [r["file_id"] for r in store.get_user_files(USER)] == [with_expiry(2, None, clock.now)["file_id"]]
    assert store.delete_expired_files() == 1


AMBIGUOUS = "2026-11-01T01:30:00"  # New York: 05:30Z (EDT) or 06:30Z (EST)
MISSING = "2026-03-08T02:30:00"  # New York: skipped by the spring-forward


def test_an_ambiguous_legacy_time_is_neither_live_nor_deleted_while_undecided(backend: Backend) -> None:
    clock = MovableClock(dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC))  # between the two readings
    insert_raw(backend, with_expiry(1, AMBIGUOUS, clock.now), with_expiry(2, None, clock.now))
    store = backend.make(clock=clock, legacy_timezone="America/New_York")
    assert [r["file_id"] for r in store.get_user_files(USER)] == [with_expiry(2, None, clock.now)["file_id"]]
    assert store.get_file(with_expiry(1, None, clock.now)["file_id"]) is None
    assert store.delete_expired_files() == 0  # it may still be live
    assert backend.db["user_files"].count_documents({}) == 2
    clock.now = dt.datetime(2026, 11, 1, 5, 29, tzinfo=UTC)  # before both readings: live
    assert len(store.get_user_files(USER)) == 2
    clock.now = dt.datetime(2026, 11, 1, 6, 30, tzinfo=UTC)  # at or after both: expired, deleted
    assert store.delete_expired_files() == 1


def test_an_unreadable_legacy_expiry_is_never_live_and_never_deleted(
    backend: Backend, clock: MovableClock
) -> None:
    insert_raw(backend, with_expiry(1, "soon", clock.now), with_expiry(2, "2026-02-30T00:00:00", clock.now))
    store = backend.make(clock=clock)
    assert store.get_user_files(USER) == []
    assert store.delete_expired_files() == 0
    assert backend.db["user_files"].count_documents({}) == 2


def test_legacy_readings_of_ambiguous_and_missing_times() -> None:
    zone = LegacyTime.named("America/New_York")
    ambiguous = zone.read(AMBIGUOUS)
    assert ambiguous is not None
    assert not ambiguous.exact
    assert (ambiguous.earliest, ambiguous.latest, ambiguous.moment) == (
        dt.datetime(2026, 11, 1, 5, 30, tzinfo=UTC),
        dt.datetime(2026, 11, 1, 6, 30, tzinfo=UTC),
        dt.datetime(2026, 11, 1, 6, 30, tzinfo=UTC),  # the later one, as $dateFromString
    )
    missing = zone.read(MISSING)
    assert missing is not None
    assert missing.moment == dt.datetime(2026, 3, 8, 7, 30, tzinfo=UTC)  # the offset before the change
    assert zone.read("2026-07-01T12:00:00.1234567") == zone.read("2026-07-01T12:00:00.123")
    assert parse_iso("not a date") is None
    assert parse_iso("2026-01-01T10:00:00+24:00") is None


def test_store_and_migration_0002_read_tricky_strings_alike(real_db: Database[Any]) -> None:
    strings = [AMBIGUOUS, MISSING, "2026-01-01T10:00:00.123999", "2026-01-01 10:00:00", "20260101T100000",
               "2026-07-04T23:59:59.9999", "2026-11-01T00:59:59", "2026-11-01T02:00:00"]  # fmt: skip
    collection = real_db["user_files"]
    collection.create_index("file_id", unique=True)
    now = dt.datetime(2026, 1, 1)
    docs = []
    for n, text in enumerate(strings):
        doc = legacy_record(n, USER, now=now, expires="never")
        doc["uploaded_at"] = text
        docs.append(doc)
    collection.insert_many(docs)
    store = UserFiles(real_db, legacy_timezone="America/New_York", expiration_hours=-1)
    before = {r["file_id"]: r["created_at"] for r in store.get_user_files(USER)}
    convert_legacy_records(real_db, "user_files", timezone="America/New_York")
    converted = {doc["file_id"]: doc["created_at"].replace(tzinfo=UTC) for doc in collection.find()}
    assert converted == before
    assert {r["file_id"]: r["created_at"] for r in store.get_user_files(USER)} == before


@pytest.fixture
def local_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The process's local zone set to ``request.param`` (TZ + tzset), restored afterwards."""
    with helpers.local_zone(request.param) as name:
        yield name


@pytest.mark.parametrize("local_zone", ["America/New_York", "Asia/Tokyo"], indirect=True)
def test_the_bots_writer_strings_are_local_time_of_the_calling_process(
    backend: Backend, local_zone: str
) -> None:
    # The bot: datetime.now().isoformat() in its own process, FILE_EXPIRATION_HOURS=1.
    local_now = dt.datetime.now()
    real_now = dt.datetime.now(UTC)
    writer = legacy_record(1, USER, now=local_now)
    writer["uploaded_at"] = local_now.isoformat()
    writer["expires_at"] = (local_now + dt.timedelta(hours=1)).isoformat()
    store = backend.make(expiration_hours=1)
    store.save_user_file(writer)
    [record] = store.get_user_files(USER)  # live: not stored hours in the past or future
    assert abs(record["created_at"] - real_now) < dt.timedelta(seconds=30)
    assert abs(record["expires_at"] - (real_now + dt.timedelta(hours=1))) < dt.timedelta(seconds=30)

    # Strings already stored keep using legacy_timezone (UTC here), whatever the process's zone.
    stored = legacy_record(2, USER, now=dt.datetime(2030, 1, 1, 12, 0), expires="never")
    insert_raw(backend, stored)
    [read] = [r for r in store.get_user_files(USER) if r["file_id"] == stored["file_id"]]
    assert read["created_at"] == parse_iso(stored["uploaded_at"]).replace(tzinfo=UTC)  # type: ignore[union-attr]


def test_an_ambiguous_expiry_is_not_shown_as_live_once_one_reading_passed() -> None:
    zone = LegacyTime.named("America/New_York")
    between = dt.datetime(2026, 11, 1, 6, 0, tzinfo=UTC)
    assert not is_live({"expires_at": AMBIGUOUS}, between, zone)
    assert is_live({"expires_at": None}, between, zone)
