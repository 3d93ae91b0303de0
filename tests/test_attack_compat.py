"""Adversarial tests (helper attack1): the mixin's bot view at the edges of time."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.database import Database

from userfiles_db.clock import UTC
from userfiles_db.compat import UserFilesMixin
from userfiles_db.local_server import LocalMongod

USER = 61


class Handler(UserFilesMixin):
    def __init__(self, db: Any, root: Path, **options: Any) -> None:
        self.db = db
        self.user_files_root = root
        self.user_files_options = {"legacy_timezone": "UTC", **options}
        self.init_user_files()


@pytest.fixture
def zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize(
    ("zone", "field", "value"),
    [
        # "never", spelled as the largest date some callers use: east of UTC its local time is
        # past year 9999.
        ("Asia/Tokyo", "expires_at", dt.datetime(9999, 12, 31, 20, tzinfo=UTC)),
        # The smallest date west of UTC: its local time is before year 1.
        ("America/New_York", "created_at", dt.datetime(1, 1, 1, 1, tzinfo=UTC)),
    ],
    indirect=["zone"],
)
def test_a_record_at_the_datetime_limits_is_listed_not_a_crash(
    mongod: LocalMongod, real_user_files_db: Database[Any], tmp_path: Path, zone: str, field: str, value: Any
) -> None:
    """The store accepts these dates (BSON holds them); the mixin's bot view turned them into
    local time and raised OverflowError, so /files and the code interpreter failed for the user."""
    data = {
        "file_id": f"{USER}_edge", "user_id": USER, "filename": "edge.csv", "file_type": "csv",
        "file_path": str(tmp_path / "edge.csv"), "size": 1, "expires_at": None, field: value,
    }  # fmt: skip

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
        try:
            handler = Handler(client[real_user_files_db.name], tmp_path)
            await handler.save_user_file(data)
            return await handler.list_user_files(USER), await handler.get_user_file(data["file_id"], USER)
        finally:
            await client.close()

    listed, one = asyncio.run(scenario())
    assert [r["file_id"] for r in listed] == [data["file_id"]]
    assert one is not None
    shown = "uploaded_at" if field == "created_at" else field
    assert isinstance(one[shown], str)
    dt.datetime.fromisoformat(one[shown])  # what /files parses


def test_a_time_bound_no_call_can_meet_stops_the_bot_at_start_up(
    mongod: LocalMongod, real_user_files_db: Database[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from userfiles_db.errors import ConfigurationError, DatabaseUnavailable

    monkeypatch.setenv("USERFILES_TIMEOUT_SECONDS", "1e-6")

    async def scenario() -> None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
        try:
            handler = Handler(client[real_user_files_db.name], tmp_path)  # init_user_files()
            with pytest.raises(DatabaseUnavailable):
                await handler.list_user_files(USER)  # ... and so does every call
        finally:
            await client.close()

    with pytest.raises(ConfigurationError):
        asyncio.run(scenario())


@pytest.mark.parametrize("zone", ["America/New_York"], indirect=True)
def test_the_newest_upload_stays_across_the_dst_fall_back(
    mongod: LocalMongod, real_user_files_db: Database[Any], tmp_path: Path, zone: str
) -> None:
    """The bot's writer dict carries naive local strings of "now"; in the repeated hour of a DST
    fall-back the store read an upload made in the first pass as the later instant, so an upload
    made 20 minutes after it sorted as older and was evicted at once (reported failed)."""
    # 2026-11-01 in New York: 01:00-02:00 is shown twice (EDT, then EST).
    first_pass = dt.datetime(2026, 11, 1, 5, 50, tzinfo=UTC)  # 01:50 EDT
    second_pass = dt.datetime(2026, 11, 1, 6, 10, tzinfo=UTC)  # 01:10 EST, 20 minutes later
    now = [first_pass]

    def writer_dict(n: int, at: dt.datetime) -> dict[str, Any]:
        local = at.astimezone().replace(tzinfo=None)  # datetime.now() in the bot's process
        path = tmp_path / str(USER) / f"{USER}_{int(at.timestamp())}_{n:08x}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        return {
            "file_id": path.stem, "user_id": USER, "filename": f"f{n}.csv", "file_path": str(path),
            "file_size": 1, "file_type": "csv", "uploaded_at": local.isoformat(),
            "expires_at": (local + dt.timedelta(hours=48)).isoformat(),
        }  # fmt: skip

    async def scenario() -> list[str]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
        try:
            handler = Handler(
                client[real_user_files_db.name], tmp_path, max_files_per_user=1, clock=lambda: now[0]
            )
            older = writer_dict(1, first_pass)
            await handler.add_user_file(older)
            now[0] = second_pass
            newer = writer_dict(2, second_pass)
            await handler.add_user_file(newer)  # the user's newest upload: kept
            return [r["file_id"] for r in await handler.list_user_files(USER)]
        finally:
            await client.close()

    kept = asyncio.run(scenario())
    assert kept == [f"{USER}_{int(second_pass.timestamp())}_00000002"]


@pytest.mark.parametrize(
    "zone",
    # TZ forms the C library (and so the old bot's datetime.now()) honours, but that are not
    # IANA keys: a POSIX rule with DST, one without, and a path to a zone file.
    ["CET-1CEST,M3.5.0,M10.5.0/3", "<+03>-3", "/usr/share/zoneinfo/Asia/Tokyo"],
    indirect=True,
)
def test_an_expired_record_of_the_old_bot_is_never_returned_whatever_the_tz_spelling(
    mongod: LocalMongod, real_user_files_db: Database[Any], tmp_path: Path, zone: str
) -> None:
    """The mixin read the old bot's naive strings in ``local_zone_name()``, which fell back to UTC
    for these TZ values while the process's local time is east of UTC: a file the old bot sees as
    expired 30 minutes ago was returned as live. Now the zone file's path is understood, and a TZ
    the store cannot name stops the bot at start-up (set USERFILES_LEGACY_TIMEZONE)."""
    from userfiles_db.errors import ConfigurationError

    if zone.startswith("/") and not Path(zone).exists():
        pytest.skip(f"no {zone} on this machine")
    expired_local = (dt.datetime.now() - dt.timedelta(minutes=30)).isoformat()  # the old bot's clock
    real_user_files_db["user_files"].delete_many({})
    real_user_files_db.client.get_database(real_user_files_db.name).command(
        "collMod", "user_files", validationAction="warn"
    )
    real_user_files_db["user_files"].insert_one(
        {
            "file_id": f"{USER}_old",
            "user_id": USER,
            "filename": "old.csv",
            "file_type": "csv",
            "file_path": str(tmp_path / "old.csv"),
            "file_size": 1,
            "uploaded_at": (dt.datetime.now() - dt.timedelta(hours=50)).isoformat(),
            "expires_at": expired_local,
        }
    )

    async def scenario() -> list[dict[str, Any]] | None:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
        try:

            class BotHandler(UserFilesMixin):  # the bot's handler: no options, the defaults
                def __init__(self) -> None:
                    self.db = client[real_user_files_db.name]
                    self.user_files_root = tmp_path
                    self.init_user_files()

            try:
                handler = BotHandler()
            except ConfigurationError as exc:
                assert "USERFILES_LEGACY_TIMEZONE" in str(exc)
                return None
            return await handler.list_user_files(USER)
        finally:
            await client.close()

    listed = asyncio.run(scenario())
    assert not listed, f"returned a record that expired 30 minutes ago (TZ={zone!r})"
