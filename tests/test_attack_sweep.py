"""Adversarial tests (helper attack1): the sweep's path mapping and safety checks, as an unlucky
operator meets them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from pymongo.database import Database

from userfiles_db.clock import UTC
from userfiles_db.disk import sweep

BOT_ROOT = "/tmp/bot_code_interpreter/user_files"  # the path inside the bot's container
USER = 887654321098765432


def record(n: int, path: str) -> dict[str, Any]:
    now = dt.datetime.now(UTC)
    return {
        "file_id": f"{USER}_{1700000000 + n}_{n:08x}", "user_id": USER, "filename": f"f{n}.csv",
        "file_type": "csv", "file_path": path, "size": 4, "created_at": now,
        "expires_at": now + dt.timedelta(hours=48),
    }  # fmt: skip


def test_records_naming_the_local_path_still_claim_their_files_with_records_root(
    tmp_path: Path, real_user_files_db: Database[Any]
) -> None:
    """The bot ran on the host first (its records say the host path), then moved into a container
    whose volume is that same host directory (newer records say the container path). The sweep on
    the host maps the container path; the records that name the host path itself are live too.
    Before the fix, --records-root replaced the local root as a prefix: their files were removed."""
    local = tmp_path / "srv" / "user_files"
    user_dir = local / str(USER)
    user_dir.mkdir(parents=True)
    coll = real_user_files_db["user_files"]
    for n in range(8):
        (user_dir / f"new{n}.csv").write_text("data")
        coll.insert_one(record(n, f"{BOT_ROOT}/{USER}/new{n}.csv"))
    for n in range(3):
        (user_dir / f"old{n}.csv").write_text("data")
        coll.insert_one(record(10 + n, str(user_dir / f"old{n}.csv")))
    report = sweep(real_user_files_db, local, records_root=BOT_ROOT, grace_seconds=0)
    assert report.removed_files == []
    assert sorted(p.name for p in user_dir.iterdir()) == sorted(
        [f"new{n}.csv" for n in range(8)] + [f"old{n}.csv" for n in range(3)]
    )
