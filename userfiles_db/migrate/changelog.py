"""The changelog: one record per migration, keyed by its id.

States: ``applying`` (written before a non-transactional migration starts; left behind if the
runner dies), ``failed`` (the migration raised), ``applied`` (written only after it finished, in
the same transaction as its data changes when it runs in one).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo.client_session import ClientSession
from pymongo.database import Database

from userfiles_db.records import as_utc

APPLYING = "applying"
APPLIED = "applied"
FAILED = "failed"


class Changelog:
    def __init__(self, db: Database[Any], collection: str) -> None:
        self.collection = db[collection]

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record by migration id (read-only: never creates the collection)."""
        return {
            str(doc["_id"]): {"id": str(doc["_id"]), **{k: as_utc(v) for k, v in doc.items() if k != "_id"}}
            for doc in self.collection.find({}, sort=[("_id", 1)])  # by the _id index: never a scan
        }

    def start(self, migration_id: str, checksum: str, now: dt.datetime, run: dict[str, Any]) -> None:
        self.collection.replace_one(
            {"_id": migration_id},
            {"state": APPLYING, "checksum": checksum, "started_at": now, **run},
            upsert=True,
        )

    def finish(
        self,
        migration_id: str,
        checksum: str,
        started: dt.datetime,
        now: dt.datetime,
        run: dict[str, Any],
        session: ClientSession | None = None,
        stamped: bool = False,
    ) -> None:
        record = {
            "state": APPLIED,
            "checksum": checksum,
            "started_at": started,
            "applied_at": now,
            "duration_ms": int((now - started).total_seconds() * 1000),
            **run,
        }
        if stamped:
            record["stamped"] = True
        self.collection.replace_one({"_id": migration_id}, record, upsert=True, session=session)

    def fail(self, migration_id: str, error: str, now: dt.datetime) -> None:
        self.collection.update_one(
            {"_id": migration_id}, {"$set": {"state": FAILED, "error": error, "failed_at": now}}
        )

    def accept_checksum(self, migration_id: str, checksum: str, now: dt.datetime) -> None:
        """Record an edited applied migration's new checksum (the explicit repair path)."""
        self.collection.update_one(
            {"_id": migration_id},
            {"$set": {"checksum": checksum, "checksum_accepted_at": now}},
        )

    def remove(self, migration_id: str, session: ClientSession | None = None) -> None:
        self.collection.delete_one({"_id": migration_id}, session=session)
