"""Adversarial tests (helper attack1): the upload writer against a frozen server.

The mixin's ``add_user_file`` promises: an upload whose record was not saved is reported failed
and its file removed; files are never removed from under a live record; every call answers
within the bound. A server frozen with SIGSTOP while the save's write is in flight receives the
write, and runs it once resumed: the client's time bound only stops the client from waiting. So
when the database did not answer, the file is kept (the sweep removes it if no record claims it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from tests.helpers import freeze
from userfiles_db.compat import UserFilesMixin
from userfiles_db.errors import DatabaseUnavailable
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate.steps import create_collection
from userfiles_db.schema import load_schema

USER = 223456789012345678
BOUND = 1.0
PATIENT = 20.0


@pytest.fixture(scope="module")
def frozen_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMongod]:
    server = LocalMongod(tmp_path_factory.mktemp("mongod-attack-faults"))
    server.start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)  # never leave it frozen
    server.stop()


class Handler(UserFilesMixin):
    def __init__(self, db: Any, root: Path, timeout: float) -> None:
        self.db = db
        self.user_files_root = root
        self.user_files_options = {"timeout_seconds": timeout, "legacy_timezone": "UTC"}
        self.init_user_files()


def upload(root: Path, n: int) -> dict[str, Any]:
    """The bot's writer dict for a file it has just written under ``root``."""
    path = root / str(USER) / f"{USER}_{1700000000 + n}_{n:08x}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"a,b\n1,2\n")
    return {
        "file_id": path.stem,
        "user_id": USER,
        "filename": f"data{n}.csv",
        "file_path": str(path),
        "file_size": 8,
        "file_type": "csv",
    }


def test_a_write_that_lands_after_the_bound_never_leaves_a_live_record_without_its_file(
    frozen_server: LocalMongod, tmp_path: Path
) -> None:
    root = tmp_path / "user_files"
    root.mkdir()
    name = "attack_frozen_upload"
    admin: MongoClient[dict[str, Any]]
    with MongoClient(frozen_server.uri) as admin:
        admin.drop_database(name)
        create_collection(admin[name], load_schema())
    assert frozen_server.process is not None
    pid = frozen_server.process.pid

    async def scenario() -> tuple[dict[str, Any], BaseException | None]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(frozen_server.uri)
        try:
            handler = Handler(client[name], root, BOUND)
            await handler.add_user_file(upload(root, 0))  # warm: connected, index checked
            data = upload(root, 1)
            freeze(pid)
            error: BaseException | None = None
            try:
                await handler.add_user_file(data)
            except DatabaseUnavailable as exc:
                error = exc
            finally:
                os.kill(pid, signal.SIGCONT)
            return data, error
        finally:
            await client.close()

    # Before the fix, add_user_file removed the file after the timed-out write, and the frozen
    # server ran the write once resumed: a live record without its file.
    data, error = asyncio.run(scenario())
    assert error is not None  # the upload is reported failed: its outcome was unknown
    check: MongoClient[dict[str, Any]]
    with MongoClient(frozen_server.uri) as check:
        deadline = time.monotonic() + PATIENT
        record = None
        while time.monotonic() < deadline:
            record = check[name]["user_files"].find_one({"file_id": data["file_id"]})
            if record is not None:
                break
            time.sleep(0.2)
        # Either the record never lands, or its file is still there.
        if record is not None:
            assert Path(data["file_path"]).exists(), "a live record whose file the failed upload removed"


TIMED_BOUND = 3.0


def test_an_upload_on_a_frozen_server_answers_within_the_bound(
    frozen_server: LocalMongod, tmp_path: Path
) -> None:
    root = tmp_path / "user_files"
    root.mkdir()
    name = "attack_frozen_bound"
    admin: MongoClient[dict[str, Any]]
    with MongoClient(frozen_server.uri) as admin:
        admin.drop_database(name)
        create_collection(admin[name], load_schema())
    assert frozen_server.process is not None
    pid = frozen_server.process.pid

    async def scenario() -> float:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(frozen_server.uri)
        try:
            handler = Handler(client[name], root, TIMED_BOUND)
            await handler.add_user_file(upload(root, 0))  # warm: connected, index checked
            data = upload(root, 1)
            freeze(pid)
            started = time.monotonic()
            try:
                with pytest.raises(DatabaseUnavailable):
                    await handler.add_user_file(data)
                return time.monotonic() - started
            finally:
                os.kill(pid, signal.SIGCONT)
        finally:
            await client.close()

    # Before the fix, _discard_upload asked claimed_paths after the failed save: a second bound.
    elapsed = asyncio.run(scenario())
    # Generous: half a bound of slack on a loaded machine; twice the bound is the defect.
    assert elapsed < 1.5 * TIMED_BOUND, (
        f"add_user_file answered after {elapsed:.1f} s (bound {TIMED_BOUND} s)"
    )
