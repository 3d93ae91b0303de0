"""Helpers for migration tests: legacy data as the bot writes it, and throw-away migration sets."""

from __future__ import annotations

import datetime as dt
import random
import shutil
import textwrap
from pathlib import Path
from typing import Any

import yaml
from pymongo.database import Database

from userfiles_db.migrate.config import bundled_migrations
from userfiles_db.schema import package_data

LEGACY_NOW = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)  # naive UTC, as the bot writes


def legacy_record(n: int, user_id: int, *, now: dt.datetime, expires: str = "live") -> dict[str, Any]:
    """One record exactly as the bot's writer stores it today (ISO strings, file_size, uploaded_at)."""
    uploaded = now - dt.timedelta(minutes=n % 500)
    if expires == "never":
        expires_at: str | None = None
    elif expires == "expired":
        expires_at = (now - dt.timedelta(hours=1 + n % 5)).isoformat()
    else:
        expires_at = (now + dt.timedelta(hours=48)).isoformat()
    file_id = f"{user_id}_{int(uploaded.timestamp())}_{n:08x}"
    return {
        "file_id": file_id,
        "user_id": user_id,
        "filename": f"file{n}.csv",
        "file_path": f"/tmp/bot_code_interpreter/user_files/{user_id}/{file_id}.csv",
        "file_size": 100 + n,
        "file_type": random.Random(n).choice(["csv", "excel", "json", "image", "python", "text"]),
        "uploaded_at": uploaded.isoformat(),
        "expires_at": expires_at,
    }


def create_bot_collection(db: Database[Any], count: int, *, now: dt.datetime) -> dict[str, int]:
    """The bot's collection: its three indexes (plain expires_at_1) and ``count`` legacy records,
    about 10% expired and 10% never expiring. Returns how many of each."""
    collection = db["user_files"]
    collection.create_index([("user_id", 1), ("expires_at", -1)])
    collection.create_index("file_id", unique=True)
    collection.create_index("expires_at")
    kinds = {"live": 0, "expired": 0, "never": 0}
    batch = []
    for n in range(count):
        kind = "expired" if n % 10 == 3 else "never" if n % 10 == 7 else "live"
        kinds[kind] += 1
        batch.append(legacy_record(n, 10**17 + n % 300, now=now, expires=kind))
        if len(batch) == 5000:
            collection.insert_many(batch)
            batch = []
    if batch:
        collection.insert_many(batch)
    return kinds


def migrations_copy(tmp_path: Path) -> Path:
    """A copy of the bundled migrations that a test may edit."""
    target = tmp_path / "migrations"
    shutil.copytree(bundled_migrations(), target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def write_migration(folder: Path, stem: str, body: str, doc: str = "A test migration.") -> Path:
    """Write ``folder/stem.py`` with ``doc`` and ``body`` (which defines up/down and flags)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.py"
    path.write_text(f'"""{doc}"""\n\nfrom typing import Any\n\n' + textwrap.dedent(body))
    return path


INSERT_MARKER = """
from userfiles_db.migrate import current_session

def up(db: Any) -> None:
    db["marks"].insert_one({"_id": "%(stem)s"}, session=current_session())

def down(db: Any) -> None:
    db["marks"].delete_one({"_id": "%(stem)s"}, session=current_session())
"""


def marker_migration(folder: Path, stem: str, extra: str = "") -> Path:
    """A migration that inserts (and on down deletes) a marker document ``{_id: stem}``."""
    return write_migration(folder, stem, INSERT_MARKER % {"stem": stem} + extra)


def write_schema(folder: Path, *documents: dict[str, Any]) -> Path:
    """Write each schema ``document`` as ``folder/NAME.vN.yaml``; return ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for document in documents:
        path = folder / f"{document['collection']}.v{document['version']}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return folder


def schema_project(tmp_path: Path) -> Path:
    """A project in ``tmp_path``: the bundled migrations copied into ``migrations/`` and a schema
    directory ``schema/`` holding the bundled ``user_files.v1.yaml`` (what they build)."""
    migrations_copy(tmp_path)
    schema = write_schema(tmp_path / "schema")
    (schema / "user_files.v1.yaml").write_text((bundled_schema() / "user_files.v1.yaml").read_text())
    return tmp_path


def bundled_schema() -> Path:
    return Path(str(package_data("userfiles_db.schemas", "schema")))
