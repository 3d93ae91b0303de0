"""The real bot keeps working at every stage of the rollout and the rollback, old code and new.

One database is walked through the stages of docs/bot-integration.md, with the bot's own calls
(``tests/bot_calls.py``) on Motor, the bot's driver. At each stage, every bot version allowed there
starts (its start-up code included), uploads, lists with sizes and dates, looks files up for the
code interpreter, holds the limit and resets; records written by one version are read by the other.
The whole walk runs with the process's local zone west of, at, and east of UTC: the bot writes
naive local strings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tests import helpers
from tests.bot_calls import NewBot, OldBot
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import EngineOptions, Runner, discover
from userfiles_db.migrate.config import bundled_migrations

pytestmark = pytest.mark.asyncio

LIMIT = 4
EXPIRATION_HOURS = 48


@pytest.fixture(params=["UTC", "America/New_York", "Asia/Tokyo"])
def local_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    """The bot process's local zone (TZ), as a container or host would set it."""
    with helpers.local_zone(request.param) as name:
        yield name


def migrate(db: Database[Any], zone: str, action: str, target: str | None = None) -> None:
    """``migrate.py up/down --to TARGET`` with the legacy zone set to the bot's zone."""
    runner = Runner(
        db, discover(bundled_migrations()), EngineOptions(migration_options={"legacy_timezone": zone})
    )
    if action == "up":
        runner.up(target)
    else:
        runner.down(target)


async def check_bot(bot: OldBot, user: int, label: str) -> str:
    """Everything a user does with their files, through ``bot``'s own code. Returns a file_id it
    uploaded (for cross-version checks)."""
    await bot.startup()
    uploaded = await bot.upload(user, b"a,b\n1,2\n" * 200, f"{label}.csv")
    assert uploaded["success"], (bot.version, uploaded)
    file_id = str(uploaded["file_id"])

    rows = await bot.files_command(user)
    assert isinstance(rows, list), (bot.version, rows)
    mine = [row for row in rows if row[0] == f"{label}.csv"]
    assert mine, (bot.version, rows)
    _name, size, uploaded_str, expires = mine[0]
    assert size == "1.6 KB", (bot.version, rows)  # 1,600 bytes, never "0 B"
    shown = datetime.strptime(uploaded_str, "%Y-%m-%d %H:%M")  # the bot's local time, not UTC
    assert abs(shown - datetime.now()) < timedelta(minutes=2), (bot.version, rows)
    assert expires in (f"{EXPIRATION_HOURS - 1}h left", f"{EXPIRATION_HOURS}h left"), (bot.version, rows)
    assert all(row[1] != "0 B" and row[2] != "Unknown" for row in rows), (bot.version, rows)

    paths = await bot.code_interpreter_paths(user)
    assert file_id in paths, (bot.version, paths)
    loaded = await bot.load_file(file_id, user)
    assert loaded["success"], (bot.version, loaded)
    assert loaded["file_size"] == 1600, (bot.version, loaded)
    assert await bot.get_file(file_id, user + 1) is None  # owner-scoped
    return file_id


async def check_limit(bot: OldBot, user: int) -> None:
    """Uploads past the limit leave the user at the limit; the newest upload is kept."""
    ids = []
    for n in range(LIMIT + 2):
        result = await bot.upload(user, b"x" * (100 + n), f"limit{n}.csv")
        assert result["success"], (bot.version, result)
        ids.append(result["file_id"])
        assert result["count"] <= LIMIT, (bot.version, result)
    live = await bot.handler_get_user_files(user)
    assert len(live) == LIMIT, (bot.version, [f["file_id"] for f in live])
    assert ids[-1] in {f["file_id"] for f in live}
    on_disk = list((bot.root / str(user)).iterdir())
    assert len(on_disk) == LIMIT, (bot.version, on_disk)


async def check_reset(bot: OldBot, user: int) -> None:
    assert (await bot.reset_command(user)).startswith("Deleted ")
    assert await bot.handler_get_user_files(user) == []
    assert not any((bot.root / str(user)).iterdir())
    assert await bot.reset_command(user) == "No files to delete."


async def sees(bot: OldBot, user: int, file_id: str) -> None:
    """``bot`` lists, sizes, dates and opens a file another version wrote."""
    rows = await bot.files_command(user)
    assert isinstance(rows, list), rows
    assert all(r[1] != "0 B" and r[2] != "Unknown" for r in rows), rows
    assert file_id in await bot.code_interpreter_paths(user), (bot.version, file_id)
    assert (await bot.load_file(file_id, user))["success"]


async def test_every_stage_of_the_rollout_and_the_rollback(
    mongod: LocalMongod,
    real_db: Database[Any],
    tmp_path: Path,
    local_zone: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from motor.motor_asyncio import AsyncIOMotorClient

    monkeypatch.setenv("FILE_EXPIRATION_HOURS", str(EXPIRATION_HOURS))
    monkeypatch.setenv("MAX_FILES_PER_USER", str(LIMIT))
    # As the guide says: outside UTC, name the zone the old bot wrote in, for the bot and the migrations.
    monkeypatch.setenv("USERFILES_LEGACY_TIMEZONE", local_zone)
    root = tmp_path / "user_files"
    root.mkdir()
    client: Any = AsyncIOMotorClient(mongod.uri)
    db = client[real_db.name]
    settings = {"expiration_hours": EXPIRATION_HOURS, "max_files": LIMIT}
    old = OldBot(db, root, **settings)

    def new(shape: str) -> NewBot:
        monkeypatch.setenv("USERFILES_WRITE_SHAPE", shape)
        return NewBot(db, root, **settings)

    try:
        # Stage 0: the bot as it runs today.
        before = await check_bot(old, 1, "before")

        # Stage 1, expand: up --to 0001. The old bot restarts and works; the new bot (legacy
        # writes) works beside it; each reads what the other wrote.
        migrate(real_db, local_zone, "up", "0001_create_user_files")
        from_old = await check_bot(old, 2, "old1")
        await check_limit(old, 3)
        await check_reset(old, 3)
        legacy_new = new("legacy")
        from_new = await check_bot(legacy_new, 2, "new1")
        await check_limit(legacy_new, 4)
        await sees(old, 2, from_new)
        await sees(legacy_new, 2, from_old)
        await sees(legacy_new, 1, before)
        chart = await legacy_new.generated_file(2, b"png" * 100, "chart.png")
        assert chart["success"]
        await check_reset(legacy_new, 4)

        # Stage 2, switch the writers: only the new bot runs, writing the canonical shape.
        canonical_new = new("canonical")
        from_canonical = await check_bot(canonical_new, 5, "new2")
        await sees(canonical_new, 2, from_old)
        await check_limit(canonical_new, 6)

        # Stage 3, contract: up (convert, TTL in place, strict validator). The new bot only; the
        # old one could not even start (its plain create_index("expires_at") fails with code 85).
        migrate(real_db, local_zone, "up")
        await check_bot(canonical_new, 7, "new3")
        await sees(canonical_new, 2, from_old)
        await sees(canonical_new, 5, from_canonical)
        await check_limit(canonical_new, 8)
        await check_reset(canonical_new, 8)
        with pytest.raises(OperationFailure) as refused:
            await old.startup()
        assert refused.value.code == 85
        # A new bot still set to legacy writes keeps working (its writes are stored canonical).
        await check_bot(new("legacy"), 9, "late")

        # Rollback: writers back to legacy, then down --to 0001: the old bot works again and sees
        # every file, including those written in the canonical shape.
        rollback_new = new("legacy")
        await check_bot(rollback_new, 10, "rb")
        migrate(real_db, local_zone, "down", "0001_create_user_files")
        for user, file_id in ((2, from_old), (2, from_new), (5, from_canonical), (1, before)):
            await sees(old, user, file_id)
        await check_bot(old, 11, "old4")
        await check_limit(old, 12)
        await check_bot(rollback_new, 11, "rb2")
        await sees(rollback_new, 2, from_old)

        # Rollback to the start: down --to base; the old bot alone, as before the rollout.
        migrate(real_db, local_zone, "down", "base")
        await check_bot(old, 13, "end")
        await sees(old, 5, from_canonical)
        await check_reset(old, 2)
    finally:
        client.close()
