"""Adversarial tests (helper attack1): the mixin never removes a live record's file.

docs/bot-integration.md: a deleted or evicted record's file is removed "unless another live record
uses the same path". The sweep reads paths as files (``..`` applied, symlinked directories inside
the root followed when claiming); the mixin compared the ``file_path`` strings, and removed the
file of a live record that names it in another spelling. It now compares the files they name.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.database import Database

from userfiles_db.compat import UserFilesMixin
from userfiles_db.disk import sweep
from userfiles_db.local_server import LocalMongod

USER = 41


class Handler(UserFilesMixin):
    def __init__(self, db: Any, root: Path) -> None:
        self.db = db
        self.user_files_root = root
        self.user_files_options = {"legacy_timezone": "UTC", "max_files_per_user": 20}
        self.init_user_files()


def record(file_id: str, path: str, user_id: int = USER) -> dict[str, Any]:
    return {
        "file_id": file_id, "user_id": user_id, "filename": "data.csv", "file_type": "csv",
        "file_path": path, "size": 3,
    }  # fmt: skip


SPELLINGS = {
    "double slash": lambda root: f"{root}/{USER}//data.csv",
    "dot-dot": lambda root: f"{root}/{USER}/../{USER}/data.csv",
    "dot": lambda root: f"{root}/./{USER}/data.csv",
    "symlinked directory inside the root": lambda root: f"{root}/alias/data.csv",
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_deleting_one_record_keeps_the_file_another_live_record_names_differently(
    mongod: LocalMongod, real_user_files_db: Database[Any], tmp_path: Path, spelling: str
) -> None:
    root = tmp_path / "user_files"
    (root / str(USER)).mkdir(parents=True)
    (root / "alias").symlink_to(root / str(USER))
    target = root / str(USER) / "data.csv"
    target.write_bytes(b"a,b")
    other = SPELLINGS[spelling](str(root))
    assert os.path.samefile(other, target)

    async def scenario() -> dict[str, Any]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongod.uri)
        try:
            handler = Handler(client[real_user_files_db.name], root)
            await handler.save_user_file(record("first", str(target)))
            await handler.save_user_file(record("second", other))
            return await handler.remove_user_file("first", USER)
        finally:
            await client.close()

    assert asyncio.run(scenario())["success"]
    removed_by_the_mixin = not target.exists()
    # The sweep, reading the same records, keeps the file: the second record claims it.
    target.write_bytes(b"a,b")
    assert sweep(real_user_files_db, root, grace_seconds=0, dry_run=True).removed_files == []
    assert not removed_by_the_mixin, f"the file of the live record 'second' ({other}) was removed"
