"""UserFilesMixin: the bot's file methods on its handler, their failures, and the bot's flow."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.database import Database

from tests.migration_fixtures import legacy_record
from userfiles_db.clock import UTC
from userfiles_db.compat import UserFilesMixin, bot_view, local_zone_name
from userfiles_db.disk import sweep
from userfiles_db.errors import ConfigurationError, InvalidFileData
from userfiles_db.local_server import LocalMongod, free_port
from userfiles_db.migrate import Runner, discover
from userfiles_db.migrate.config import bundled_migrations


class DatabaseHandler(UserFilesMixin):
    """Shaped like the bot's handler: it keeps its async database in ``self.db``."""

    def __init__(self, db: Any, root: Path | None, **options: Any) -> None:
        self.db = db
        self.user_files_root = root
        self.user_files_options = options
        self.init_user_files()


def upload(root: Path, user_id: int, n: int, **changes: Any) -> dict[str, Any]:
    """The bot's upload path: the file on disk first, then its writer dict (naive local strings)."""
    record = legacy_record(n, user_id, now=dt.datetime.now())
    record["uploaded_at"] = (dt.datetime.now() - dt.timedelta(seconds=1000 - n)).isoformat()
    record["file_path"] = str(root / str(user_id) / f"{record['file_id']}.csv")
    record.update(changes)
    Path(record["file_path"]).parent.mkdir(parents=True, exist_ok=True)
    Path(record["file_path"]).write_text("a,b\n1,2\n")
    return record


@pytest.fixture
def migrated(real_db: Database[Any]) -> Database[Any]:
    Runner(real_db, discover(bundled_migrations())).up()
    return real_db


@pytest.mark.asyncio
async def test_the_bots_flow_end_to_end(mongod: LocalMongod, migrated: Database[Any], tmp_path: Path) -> None:
    root = tmp_path / "user_files"
    root.mkdir()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
    handler = DatabaseHandler(client[migrated.name], root, max_files_per_user=20)
    user, other = 10**17 + 5, 10**17 + 6

    # Uploads up to the limit of 20, then one more: the oldest record and its file go.
    uploads = []
    for n in range(21):
        record = upload(root, user, n)
        await handler.add_user_file(record)
        uploads.append(record)
    files = await handler.get_user_files(user)
    assert len(files) == 20
    assert files[0]["file_id"] == uploads[20]["file_id"]  # newest first, for /files
    assert uploads[0]["file_id"] not in {f["file_id"] for f in files}
    assert not Path(uploads[0]["file_path"]).exists()
    assert len(list((root / str(user)).iterdir())) == 20
    # The fields the bot's /files reads, as it reads them.
    shown = files[0]
    assert shown["file_size"] == shown["size"] == uploads[20]["file_size"]
    assert shown["uploaded_at"] == uploads[20]["uploaded_at"][:23] + "000"  # BSON keeps milliseconds
    assert dt.datetime.fromisoformat(shown["expires_at"]) > dt.datetime.now()
    assert await handler.count_user_files(user) == 20

    # Code-interpreter access: the user's own file, by id; not another user's.
    first = files[-1]
    found = await handler.get_user_file(first["file_id"], user)
    assert found is not None
    assert Path(found["file_path"]).read_text().startswith("a,b")
    assert await handler.get_user_file(first["file_id"], other) is None

    # /files delete: owner-scoped, record then file; the bot's result dicts.
    refused = await handler.remove_user_file(first["file_id"], other)
    assert refused == {"success": False, "error": "File not found or you don't have permission to delete it"}
    assert await handler.remove_user_file(first["file_id"], user) == {
        "success": True,
        "message": f"Deleted file: {first['filename']}",
    }
    assert not Path(first["file_path"]).exists()
    assert len(await handler.list_user_files(user)) == 19

    # Expiry: never returned once past, before and after the TTL monitor deletes it.
    soon = (dt.datetime.now() + dt.timedelta(seconds=1)).isoformat()
    short = upload(root, other, 99, expires_at=soon)
    await handler.add_user_file(short)
    assert len(await handler.get_user_files(other)) == 1
    await asyncio.sleep(1.1)
    assert await handler.get_user_files(other) == []
    deadline = time.monotonic() + 20
    while migrated["user_files"].count_documents({"user_id": other}):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.25)
    # The sweep removes the file the TTL monitor orphaned.
    assert Path(short["file_path"]).exists()
    report = sweep(migrated, root, grace_seconds=0)
    assert report.removed_files == [short["file_path"]]

    # /reset: every record and file of the user, the bot's dict.
    result = await handler.reset_user_files(user)
    assert result == {
        "success": True,
        "deleted_count": 19,
        "failed_count": 0,
        "message": "Deleted 19 file(s)",
    }
    assert await handler.get_user_files(user) == []
    assert list((root / str(user)).iterdir()) == []
    assert (await handler.reset_user_files(user))["deleted_count"] == 0
    await client.close()


@pytest.mark.asyncio
async def test_charts_never_evict_uploads(
    mongod: LocalMongod, migrated: Database[Any], tmp_path: Path
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
    handler = DatabaseHandler(client[migrated.name], tmp_path, max_files_per_user=3)
    data = [upload(tmp_path, 8, n) for n in range(3)]
    for record in data:
        await handler.add_user_file(record)
    charts = [upload(tmp_path, 8, 10 + n, filename=f"chart{n}.png") for n in range(5)]
    for chart in charts:
        await handler.add_user_file(chart, origin="generated")
    live = await handler.get_user_files(8)
    assert {f["file_id"] for f in live if f["origin"] == "upload"} == {r["file_id"] for r in data}
    assert all(Path(r["file_path"]).exists() for r in data)
    assert len([f for f in live if f["origin"] == "generated"]) == 3  # their own limit
    assert await handler.count_user_files(8) == 3
    assert await handler.count_user_files(8, "generated") == 3
    with pytest.raises(ConfigurationError, match="origin"):
        await handler.add_user_file(upload(tmp_path, 8, 30), origin="chart")
    await client.close()


@pytest.mark.asyncio
async def test_a_file_shared_by_two_records_stays_while_one_is_live(
    mongod: LocalMongod, migrated: Database[Any], tmp_path: Path
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
    handler = DatabaseHandler(client[migrated.name], tmp_path)
    first = upload(tmp_path, 9, 1)
    second = upload(tmp_path, 9, 2, file_path=first["file_path"])  # <user_id>/data.csv uploaded twice
    await handler.add_user_file(first)
    await handler.add_user_file(second)
    assert (await handler.remove_user_file(first["file_id"], 9))["success"]
    assert Path(first["file_path"]).exists()  # the second record still refers to it
    assert (await handler.remove_user_file(second["file_id"], 9))["success"]
    assert not Path(first["file_path"]).exists()
    await client.close()


@pytest.mark.asyncio
async def test_an_upload_whose_record_is_not_saved_fails_and_its_file_goes(
    mongod: LocalMongod, migrated: Database[Any], tmp_path: Path
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
    handler = DatabaseHandler(client[migrated.name], tmp_path)
    bad = upload(tmp_path, 10, 1, file_size=-5)
    with pytest.raises(InvalidFileData):
        await handler.add_user_file(bad)
    assert not Path(bad["file_path"]).exists()
    assert migrated["user_files"].count_documents({}) == 0
    # Re-saving an existing record that fails keeps its file: it may belong to the record.
    good = upload(tmp_path, 10, 2)
    await handler.add_user_file(good)
    with pytest.raises(InvalidFileData):
        await handler.save_user_file({**good, "file_size": -1})
    assert Path(good["file_path"]).exists()
    await client.close()


@pytest.mark.asyncio
async def test_with_the_server_down_failures_reach_the_user_in_bounded_time(tmp_path: Path) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}/", serverSelectionTimeoutMS=30_000
    )
    handler = DatabaseHandler(client["bot"], tmp_path, timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017, PT011 - whichever error says "unavailable"
        await handler.get_user_files(1)
    with pytest.raises(Exception):  # noqa: B017, PT011
        await handler.get_user_file("x", 1)
    record = upload(tmp_path, 1, 1)
    with pytest.raises(Exception):  # noqa: B017, PT011
        await handler.add_user_file(record)
    assert not Path(record["file_path"]).exists()  # reported as a failed upload, its file removed
    removed = await handler.remove_user_file("x", 1)
    assert removed["success"] is False
    assert "unavailable" in removed["error"]
    reset = await handler.reset_user_files(1)
    assert reset["success"] is False
    assert "unavailable" in reset["error"]
    assert time.monotonic() - started < 20  # bounded by timeout_seconds, not the driver's 30 s
    await client.close()


def test_settings_that_would_fail_every_call_fail_at_start_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FILE_EXPIRATION_HOURS", "0")
    with pytest.raises(ConfigurationError, match="FILE_EXPIRATION_HOURS"):
        DatabaseHandler(object(), tmp_path)
    monkeypatch.setenv("FILE_EXPIRATION_HOURS", "48")
    monkeypatch.setenv("MAX_FILES_PER_USER", "zero")
    with pytest.raises(ConfigurationError, match="MAX_FILES_PER_USER"):
        DatabaseHandler(object(), tmp_path)


def test_the_bot_view_is_what_the_bots_callers_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        created = dt.datetime(2026, 1, 15, 17, 0, tzinfo=UTC)
        view = bot_view({"file_id": "f", "size": 2048, "created_at": created, "expires_at": None})
        assert view["uploaded_at"] == "2026-01-15T12:00:00"  # naive local, as datetime.now() makes
        assert view["expires_at"] is None
        assert view["file_size"] == 2048
        assert view["origin"] == "upload"
        assert view["created_at"] == created  # canonical fields stay
        assert local_zone_name() == "America/New_York"
        assert local_zone_name({"TZ": ":Asia/Tokyo"}) == "Asia/Tokyo"
        assert local_zone_name({"TZ": "Not/AZone"}) in ("UTC", local_zone_name({}))
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.asyncio
async def test_seed_methods_on_the_real_server(
    mongod: LocalMongod, migrated: Database[Any], tmp_path: Path
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
    handler = DatabaseHandler(client[migrated.name], tmp_path)
    record = upload(tmp_path, 7, 1)
    await handler.save_user_file(record)
    assert [f["file_id"] for f in await handler.get_user_files(7)] == [record["file_id"]]
    assert await handler.delete_expired_files() == 0
    assert await handler.delete_user_file(record["file_id"], 8) is False  # another user's
    assert await handler.delete_user_file(record["file_id"]) is True
    assert not Path(record["file_path"]).exists()
    assert await handler.delete_user_file(record["file_id"]) is False
    with pytest.raises(InvalidFileData):
        await handler.save_user_file({"file_id": ""})
    assert migrated["user_files"].count_documents({}) == 0
    await client.close()
