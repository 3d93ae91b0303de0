"""Adversarial tests (helper attack1): the per-user limit per origin, through the mixin, with two
bot processes (two clients) saving uploads and generated files for one user at once."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.database import Database

from userfiles_db.compat import UserFilesMixin
from userfiles_db.errors import UserFilesError
from userfiles_db.local_server import LocalMongod

USER = 51
LIMIT = 2


class Handler(UserFilesMixin):
    def __init__(self, db: Any, root: Path, shape: str) -> None:
        self.db = db
        self.user_files_root = root
        self.user_files_options = {
            "legacy_timezone": "UTC",
            "max_files_per_user": LIMIT,
            "max_generated_files_per_user": LIMIT,
            "write_shape": shape,
        }
        self.init_user_files()


def written(root: Path, n: int) -> dict[str, Any]:
    path = root / str(USER) / f"{USER}_{1700000000 + n}_{n:08x}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * n)
    return {
        "file_id": path.stem, "user_id": USER, "filename": f"f{n}.csv", "file_path": str(path),
        "file_size": n, "file_type": "csv",
    }  # fmt: skip


@pytest.mark.parametrize("shape", ["canonical", "legacy"])
def test_two_processes_over_the_limit_per_origin(
    mongod: LocalMongod, real_user_files_db: Database[Any], tmp_path: Path, shape: str
) -> None:
    root = tmp_path / "user_files"
    root.mkdir()

    async def scenario() -> tuple[list[Any], dict[str, str]]:
        clients: list[AsyncMongoClient[dict[str, Any]]] = [AsyncMongoClient(mongod.uri) for _ in range(2)]
        try:
            handlers = [Handler(c[real_user_files_db.name], root, shape) for c in clients]
            origins: dict[str, str] = {}
            calls = []
            for n in range(1, 25):
                data = written(root, n)
                origin = "generated" if n % 3 == 0 else "upload"
                origins[data["file_id"]] = origin
                calls.append(handlers[n % 2].add_user_file(data, origin=origin))
            return list(await asyncio.gather(*calls, return_exceptions=True)), origins
        finally:
            for client in clients:
                await client.close()

    for round_ in range(3):
        for path in root.rglob("*.csv"):
            path.unlink()
        real_user_files_db["user_files"].delete_many({})
        results, origins = asyncio.run(scenario())
        reported: list[str] = []
        for result in results:
            if isinstance(result, BaseException):
                assert isinstance(result, UserFilesError), repr(result)
                assert "removed at once" in str(result), result
            else:
                reported += [r["file_id"] for r in result]
        stored = list(real_user_files_db["user_files"].find({"user_id": USER}))
        kept = {r["file_id"] for r in stored}
        for origin in ("upload", "generated"):
            mine = [r for r in stored if r.get("origin", "upload") == origin]
            assert len(mine) == LIMIT, (round_, origin, [r["file_id"] for r in mine])
        on_disk = {p.stem for p in (root / str(USER)).iterdir()}
        assert on_disk == kept, (round_, sorted(on_disk ^ kept))
        assert len(reported) == len(set(reported)), "an eviction reported twice"
        assert not set(reported) & kept, "a kept record reported evicted"
        assert set(reported) | kept <= set(origins)
