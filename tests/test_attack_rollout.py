"""Adversarial tests (helper attack1): the rollout of docs/bot-integration.md, attacked.

Old and new bots (``tests/bot_calls.py``, the bot's own calls) on Motor against the real server:
the operator's commands run as the guide gives them, in the bot's environment.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database

from tests.bot_calls import NewBot, OldBot
from userfiles_db.cli import State, cli
from userfiles_db.errors import ConfigurationError
from userfiles_db.local_server import LocalMongod

pytestmark = pytest.mark.asyncio


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The bot's container runs with TZ=America/New_York (its .env sets TZ)."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield "America/New_York"
    monkeypatch.undo()
    time.tzset()


def motor_db(mongod: LocalMongod, name: str) -> Any:
    from motor.motor_asyncio import AsyncIOMotorClient

    return AsyncIOMotorClient(mongod.uri)[name]


def migrate_cli(mongod: LocalMongod, db: str, cwd: Path, *args: str, **env: str) -> None:
    """``userfiles-migrate ARGS`` in the bot's environment (the compose file's env_file): the
    bot's .env, nothing the guide does not ask for."""
    environ = {"MONGODB_URI": mongod.uri, "MONGODB_DB": db, "TZ": os.environ.get("TZ", "UTC"), **env}
    result = CliRunner().invoke(cli, list(args), obj=State(environ=environ, cwd=cwd))
    assert result.exit_code == 0, result.output


async def test_the_contract_keeps_the_old_bots_files_live_in_the_bots_own_zone(
    mongod: LocalMongod,
    real_db: Database[Any],
    tmp_path: Path,
    new_york: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FILE_EXPIRATION_HOURS", "3")
    monkeypatch.delenv("USERFILES_LEGACY_TIMEZONE", raising=False)
    root = tmp_path / "user_files"
    root.mkdir()
    db = motor_db(mongod, real_db.name)
    try:
        old = OldBot(db, root, expiration_hours=3)
        migrate_cli(mongod, real_db.name, tmp_path, "up", "--to", "0001_create_user_files")
        await old.startup()
        uploaded = await old.upload(7, b"a,b\n", "kept.csv")
        assert uploaded["success"]
        monkeypatch.setenv("USERFILES_WRITE_SHAPE", "legacy")
        stage2 = NewBot(db, root, expiration_hours=3)
        # attack1: the mixin read the old bot's strings in the process's zone while migration
        # 0002 defaults to UTC, so the contract moved every expiry hours earlier. Outside UTC the
        # new bot now refuses to start until the zone is named, in the one variable both read.
        with pytest.raises(ConfigurationError, match="USERFILES_LEGACY_TIMEZONE"):
            await stage2.startup()
        monkeypatch.setenv("USERFILES_LEGACY_TIMEZONE", new_york)
        await stage2.startup()
        assert uploaded["file_id"] in await stage2.code_interpreter_paths(7)  # live for the new bot
        monkeypatch.setenv("USERFILES_WRITE_SHAPE", "canonical")
        migrate_cli(mongod, real_db.name, tmp_path, "up", USERFILES_LEGACY_TIMEZONE=new_york)
        stage4 = NewBot(db, root, expiration_hours=3)
        await stage4.startup()
        # Three hours left before the contract; still live after it.
        assert uploaded["file_id"] in await stage4.code_interpreter_paths(7)
    finally:
        db.client.close()


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Tokyo"])
async def test_old_and_new_bots_upload_together_for_one_user_at_stage_1(
    mongod: LocalMongod,
    real_db: Database[Any],
    tmp_path: Path,
    zone: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stage 1-2: both versions upload for the same user at once, limits hit from both sides.
    Afterwards every live record's file is on disk, both versions list the same files, and the
    newest files stay."""
    monkeypatch.setenv("TZ", zone)
    time.tzset()
    monkeypatch.setenv("MAX_FILES_PER_USER", "3")
    monkeypatch.setenv("FILE_EXPIRATION_HOURS", "48")
    monkeypatch.setenv("USERFILES_LEGACY_TIMEZONE", zone)  # outside UTC the guide asks for it
    monkeypatch.setenv("USERFILES_WRITE_SHAPE", "legacy")
    root = tmp_path / "user_files"
    root.mkdir()
    db = motor_db(mongod, real_db.name)
    try:
        migrate_cli(mongod, real_db.name, tmp_path, "up", "--to", "0001_create_user_files")
        old = OldBot(db, root, max_files=3)
        new = NewBot(db, root, max_files=3)
        await old.startup()
        await new.startup()
        user = 31
        for round_ in range(6):
            results = await asyncio.gather(
                *(old.upload(user, b"o" * (10 + n), f"old{round_}_{n}.csv") for n in range(2)),
                *(new.upload(user, b"n" * (10 + n), f"new{round_}_{n}.csv") for n in range(2)),
            )
            assert all(r["success"] for r in results[:2]), results
            for result in results[2:]:
                # Four uploads at once over a limit of 3: the oldest may be evicted at once, and is
                # then reported failed (the documented rule), its file and record gone.
                assert result["success"] or "removed at once" in result["error"], result
        raw = await db.user_files.find({"user_id": user}).to_list(None)
        for record in raw:
            assert Path(record["file_path"]).exists(), ("live record without its file", record)
        # Nothing left behind either: every file on disk has its record (evicted ones removed).
        assert {p.stem for p in (root / str(user)).iterdir()} == {r["file_id"] for r in raw}
        seen_old = {f["file_id"] for f in await old.handler_get_user_files(user)}
        seen_new = {f["file_id"] for f in await new.handler_get_user_files(user)}
        assert seen_old == seen_new == {r["file_id"] for r in raw}
        # One more upload by the new bot alone brings the user back within the limit.
        last = await new.upload(user, b"last", "last.csv")
        assert last["success"], last
        assert last["count"] <= 3, last
        kept = {f["file_id"] for f in await old.handler_get_user_files(user)}
        assert last["file_id"] in kept
        assert len(kept) <= 3
        on_disk = {p.stem for p in (root / str(user)).iterdir()}
        assert kept <= on_disk
    finally:
        db.client.close()
        monkeypatch.undo()  # TZ back first, then the C library's local time with it
        time.tzset()


async def test_the_rollback_down_while_the_new_bot_writes_leaves_nothing_the_old_bot_cannot_see(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R1 then R2: the new bot, switched back to legacy writes, keeps uploading while
    ``down --to 0001`` runs; afterwards the old bot sees every record."""
    monkeypatch.setenv("MAX_FILES_PER_USER", "50")
    monkeypatch.setenv("FILE_EXPIRATION_HOURS", "48")
    monkeypatch.delenv("USERFILES_LEGACY_TIMEZONE", raising=False)
    root = tmp_path / "user_files"
    root.mkdir()
    db = motor_db(mongod, real_db.name)
    try:
        migrate_cli(mongod, real_db.name, tmp_path, "up")
        monkeypatch.setenv("USERFILES_WRITE_SHAPE", "canonical")
        canonical = NewBot(db, root, max_files=50)
        await canonical.startup()
        for n in range(5):
            assert (await canonical.upload(n, b"c", f"c{n}.csv"))["success"]
        monkeypatch.setenv("USERFILES_WRITE_SHAPE", "legacy")
        new = NewBot(db, root, max_files=50)
        await new.startup()
        stop = asyncio.Event()

        async def keep_uploading() -> list[str]:
            saved = []
            n = 0
            while not stop.is_set() or n < 5:
                result = await new.upload(100 + n % 7, b"l" * 10, f"l{n}.csv")
                assert result["success"], result
                saved.append(str(result["file_id"]))
                n += 1
            return saved

        writer = asyncio.ensure_future(keep_uploading())
        await asyncio.sleep(0.05)
        await asyncio.to_thread(
            migrate_cli, mongod, real_db.name, tmp_path, "down", "--to", "0001_create_user_files"
        )
        stop.set()
        saved = await writer
        old = OldBot(db, root, max_files=50)
        await old.startup()
        raw = await db.user_files.find({}).to_list(None)
        not_legacy = [
            r["file_id"] for r in raw if not isinstance(r.get("expires_at"), str) or "uploaded_at" not in r
        ]
        assert not_legacy == [], f"{len(not_legacy)} of {len(raw)} records the old bot cannot read"
        for user in {*range(5), *range(100, 107)}:
            seen = {f["file_id"] for f in await old.handler_get_user_files(user)}
            assert {r["file_id"] for r in raw if r["user_id"] == user} == seen
        assert set(saved) <= {r["file_id"] for r in raw}
    finally:
        db.client.close()


async def test_the_contract_up_while_new_bots_upload_over_the_limit(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stage 4 run while canonical new bots upload for users the old bot filled to the limit:
    the limit holds, every live record has its file and nothing is left behind."""
    monkeypatch.setenv("MAX_FILES_PER_USER", "3")
    monkeypatch.setenv("FILE_EXPIRATION_HOURS", "48")
    monkeypatch.delenv("USERFILES_LEGACY_TIMEZONE", raising=False)
    root = tmp_path / "user_files"
    root.mkdir()
    db = motor_db(mongod, real_db.name)
    users = range(200, 212)
    try:
        migrate_cli(mongod, real_db.name, tmp_path, "up", "--to", "0001_create_user_files")
        old = OldBot(db, root, max_files=3)
        await old.startup()
        for user in users:
            for n in range(3):
                assert (await old.upload(user, b"o", f"old{n}.csv"))["success"]
        monkeypatch.setenv("USERFILES_WRITE_SHAPE", "canonical")
        new = NewBot(db, root, max_files=3)
        await new.startup()

        async def uploads() -> None:
            for n in range(4):
                results = await asyncio.gather(*(new.upload(u, b"n", f"new{n}.csv") for u in users))
                for result in results:
                    assert result["success"] or "removed at once" in result["error"], result

        def contract() -> None:
            migrate_cli(mongod, real_db.name, tmp_path, "up", USERFILES_BATCH_SIZE="5")

        await asyncio.gather(uploads(), asyncio.to_thread(contract))
        await uploads()  # after the contract, each user once more
        for user in users:
            raw = await db.user_files.find({"user_id": user}).to_list(None)
            assert len(raw) == 3, (user, [r["file_id"] for r in raw])
            assert all(not isinstance(r["expires_at"], str) for r in raw)
            assert {p.stem for p in (root / str(user)).iterdir()} == {r["file_id"] for r in raw}
    finally:
        db.client.close()


async def test_files_that_never_expire_through_the_rollout_and_the_sweep(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FILE_EXPIRATION_HOURS=-1 on both versions: each sees the other's files ("Never"), they stay
    live through the contract, and the sweep keeps them; FileManager.delete_file(file_id, None)
    (the patch's caller without a user) removes the record, then the file."""
    from userfiles_db.disk import sweep

    monkeypatch.setenv("FILE_EXPIRATION_HOURS", "-1")
    monkeypatch.delenv("USERFILES_LEGACY_TIMEZONE", raising=False)
    monkeypatch.setenv("USERFILES_WRITE_SHAPE", "legacy")
    root = tmp_path / "user_files"
    root.mkdir()
    db = motor_db(mongod, real_db.name)
    try:
        migrate_cli(mongod, real_db.name, tmp_path, "up", "--to", "0001_create_user_files")
        old = OldBot(db, root, expiration_hours=-1)
        new = NewBot(db, root, expiration_hours=-1)
        await old.startup()
        await new.startup()
        ids = []
        for bot in (old, new):
            result = await bot.upload(5, b"a,b\n", f"{bot.version}.csv")
            assert result["success"], result
            ids.append(result["file_id"])
        for bot in (old, new):
            rows = await bot.files_command(5)
            assert isinstance(rows, list)
            assert sorted(r[3] for r in rows) == ["Never", "Never"], (bot.version, rows)
            assert set(ids) <= set(await bot.code_interpreter_paths(5))
        monkeypatch.setenv("USERFILES_WRITE_SHAPE", "canonical")
        migrate_cli(mongod, real_db.name, tmp_path, "up")
        after = NewBot(db, root, expiration_hours=-1)
        await after.startup()
        assert set(ids) <= set(await after.code_interpreter_paths(5))
        report = sweep(real_db, root, grace_seconds=0)
        assert report.removed_files == []
        assert await after.h.remove_user_file(ids[0], None) == {
            "success": True,
            "message": "Deleted file: old.csv",
        }
        assert not any(p.stem == ids[0] for p in (root / "5").iterdir())
        assert await after.get_file(ids[0]) is None
    finally:
        db.client.close()
