"""UserFilesMixin: the seed's methods on the bot's handler, and the bot's own flow end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.database import Database

from tests.migration_fixtures import legacy_record
from userfiles_db.clock import UTC
from userfiles_db.compat import UserFilesMixin
from userfiles_db.disk import sweep
from userfiles_db.local_server import LocalMongod, free_port
from userfiles_db.migrate import Runner, discover
from userfiles_db.migrate.config import bundled_migrations

pytestmark = pytest.mark.asyncio


class DatabaseHandler(UserFilesMixin):
    """Shaped like the bot's handler: it keeps its async database in ``self.db``."""

    def __init__(self, db: Any, root: Path | None, **options: Any) -> None:
        self.db = db
        self.user_files_root = root
        self.user_files_options = options


def upload(handler: DatabaseHandler, root: Path, user_id: int, n: int, **changes: Any) -> dict[str, Any]:
    """The bot's upload path: the file on disk first, then its writer dict saved."""
    record = legacy_record(n, user_id, now=dt.datetime.now(UTC).replace(tzinfo=None))
    record["uploaded_at"] = (
        (dt.datetime.now(UTC) - dt.timedelta(seconds=1000 - n)).replace(tzinfo=None).isoformat()
    )
    record["file_path"] = str(root / str(user_id) / f"{record['file_id']}.csv")
    record.update(changes)
    Path(record["file_path"]).parent.mkdir(parents=True, exist_ok=True)
    Path(record["file_path"]).write_text("a,b\n1,2\n")
    return record


@pytest.fixture
def migrated(real_db: Database[Any]) -> Database[Any]:
    Runner(real_db, discover(bundled_migrations())).up()
    return real_db


async def test_the_bots_flow_end_to_end(mongod: LocalMongod, migrated: Database[Any], tmp_path: Path) -> None:
    root = tmp_path / "user_files"
    root.mkdir()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
    handler = DatabaseHandler(client[migrated.name], root)
    user, other = 10**17 + 5, 10**17 + 6

    # Uploads up to the limit of 20, then one more: the oldest record and its file go.
    uploads = []
    for n in range(21):
        record = upload(handler, root, user, n)
        await handler.save_user_file(record)
        uploads.append(record)
    files = await handler.get_user_files(user)
    assert len(files) == 20
    assert files[0]["file_id"] == uploads[20]["file_id"]  # newest first, for /files
    assert uploads[0]["file_id"] not in {f["file_id"] for f in files}
    assert not Path(uploads[0]["file_path"]).exists()
    assert len(list((root / str(user)).iterdir())) == 20

    # Code-interpreter access: the user's own file, by id; not another user's.
    first = files[-1]
    found = await handler.get_user_file(first["file_id"], user)
    assert found is not None
    assert Path(found["file_path"]).read_text().startswith("a,b")
    assert await handler.get_user_file(first["file_id"], other) is None

    # /files delete: owner-scoped, record then file.
    assert await handler.delete_user_file_for(other, first["file_id"]) is False
    assert await handler.delete_user_file_for(user, first["file_id"]) is True
    assert not Path(first["file_path"]).exists()
    assert len(await handler.list_user_files(user)) == 19

    # Expiry: never returned once past, before and after the TTL monitor deletes it.
    soon = (dt.datetime.now(UTC) + dt.timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    short = upload(handler, root, other, 99, expires_at=soon)
    await handler.save_user_file(short)
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

    # /reset: every record and file of the user.
    assert await handler.reset_user_files(user) == 19
    assert await handler.get_user_files(user) == []
    assert list((root / str(user)).iterdir()) == []
    sweep(migrated, root, grace_seconds=0)
    assert not (root / str(user)).exists() or list((root / str(user)).iterdir()) == []
    await client.close()


async def test_seed_methods_on_the_real_server(
    mongod: LocalMongod, migrated: Database[Any], tmp_path: Path
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
    handler = DatabaseHandler(client[migrated.name], tmp_path)
    record = upload(handler, tmp_path, 7, 1)
    await handler.save_user_file(record)
    assert [f["file_id"] for f in await handler.get_user_files(7)] == [record["file_id"]]
    assert await handler.delete_expired_files() == 0
    assert await handler.delete_user_file(record["file_id"]) is True
    assert not Path(record["file_path"]).exists()
    assert await handler.delete_user_file(record["file_id"]) is False
    await client.close()


async def test_with_the_server_down_each_method_returns_the_seeds_empty_value(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        f"mongodb://127.0.0.1:{free_port()}/", serverSelectionTimeoutMS=200
    )
    handler = DatabaseHandler(client["bot"], tmp_path)
    caplog.set_level(logging.ERROR, logger="userfiles_db.compat")
    assert await handler.get_user_files(1) == []
    await handler.save_user_file(legacy_record(1, 1, now=dt.datetime(2030, 1, 1)))  # no exception
    assert await handler.delete_user_file("x") is False
    assert await handler.delete_expired_files() == 0
    assert await handler.get_user_file("x", 1) is None
    assert await handler.delete_user_file_for(1, "x") is False
    assert await handler.reset_user_files(1) == 0
    failed = [r.getMessage() for r in caplog.records]
    assert len(failed) == 7
    assert failed[0] == "get_user_files(1) failed"
    assert all(r.exc_info for r in caplog.records)  # the database error, with its traceback
    await client.close()


async def test_bad_data_is_logged_not_raised(
    mongod: LocalMongod, migrated: Database[Any], caplog: pytest.LogCaptureFixture
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
    handler = DatabaseHandler(client[migrated.name], None)
    await handler.save_user_file({"file_id": ""})
    await client.close()
    assert "save_user_file('') failed" in caplog.text
    assert migrated["user_files"].count_documents({}) == 0
