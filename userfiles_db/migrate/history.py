"""The history: an append-only log of everything the migration tool did to a database.

One document per event in ``migrations_history`` (never updated, never deleted by the tool):
each run's start and end (with its outcome and exit code), each migration applied, failed,
resumed, interrupted, started and finished being reverted, stamped, each accepted checksum, each
unlock, each lost lease and each stop on SIGTERM. The changelog says where a database is; the
history says how it got there, including the runs that died (a run with a ``run_started`` and
no ``run_finished`` was killed).

Events are written on the primary with ``w: majority`` and retried through a failover; if the
server is gone for good the event is lost, never invented.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bson import ObjectId
from pymongo import DESCENDING
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from userfiles_db.migrate.changelog import DEFAULT_MAJORITY_TIMEOUT_SECONDS, tool_collection
from userfiles_db.migrate.retry import RetryTimeout, retry_transient
from userfiles_db.records import as_utc

DEFAULT_COLLECTION = "migrations_history"

# Event names (the ``event`` field).
RUN_STARTED = "run_started"
RUN_FINISHED = "run_finished"
STARTED = "started"
APPLIED = "applied"
FAILED = "failed"
RESUMED = "resumed"
INTERRUPTED = "interrupted"
REVERT_STARTED = "revert_started"
REVERTED = "reverted"
STAMPED = "stamped"
CHECKSUM_ACCEPTED = "checksum_accepted"
UNLOCKED = "unlocked"
LOCK_LOST = "lock_lost"
TERMINATED = "terminated"
AT_INDEX = "at_-1"


class History:
    def __init__(
        self,
        db: Database[Any],
        collection: str = DEFAULT_COLLECTION,
        majority_timeout: float = DEFAULT_MAJORITY_TIMEOUT_SECONDS,
        retry_seconds: float = 15.0,
    ) -> None:
        self.collection = tool_collection(db, collection, majority_timeout)
        self.retry_seconds = retry_seconds
        self._indexed = False

    def record(self, event: str, *, run_id: str, host: str, **fields: Any) -> bool:
        """Append one event, stamped with the server's clock (``at``, one clock for every runner);
        returns False (and writes nothing) if the server stayed unreachable."""
        doc = {"event": event, "run_id": run_id, "host": host}
        doc.update({k: v for k, v in fields.items() if v is not None})
        event_id = ObjectId()  # chosen here: a retried upsert of the same id appends once
        stage = {"$set": {"at": "$$NOW", **{k: {"$literal": v} for k, v in doc.items()}}}
        if not self._indexed:
            # `history --limit N` reads the newest N by the server's clock through this index; an
            # ObjectId carries the writing host's clock, which may be skewed. Created by the first
            # write (read-only commands never write); without it reads fall back to _id order.
            try:
                self.collection.create_index([("at", DESCENDING)], name=AT_INDEX)
                self._indexed = True
            except PyMongoError:
                pass
        try:
            retry_transient(
                lambda: self.collection.update_one({"_id": event_id}, [stage], upsert=True),
                timeout=self.retry_seconds,
                what="writing the history",
            )
        except (PyMongoError, RetryTimeout):
            return False
        return True

    def events(self, limit: int | None = None, run_id: str | None = None) -> list[dict[str, Any]]:
        """The events, oldest first (the newest ``limit`` when given, by the server's clock
        ``at``). Read-only; walks the ``at`` index, or the ``_id`` index where it is missing
        (never a collection scan)."""
        query = {"run_id": run_id} if run_id else {}
        try:
            # The newest by the server's clock (`at`), whatever the writing hosts' clocks.
            found = self._read(query, [("at", DESCENDING)], AT_INDEX, limit)
        except OperationFailure:  # no such index (nothing was written by this version yet)
            found = self._read(query, [("_id", DESCENDING)], "_id_", limit)
        found.sort(
            key=lambda doc: (doc.get("at") or dt.datetime.min.replace(tzinfo=dt.timezone.utc), doc["_id"])
        )
        for doc in found:
            doc["_id"] = str(doc["_id"])
        return found

    def _read(
        self, query: dict[str, Any], sort: list[tuple[str, int]], hint: str, limit: int | None
    ) -> list[dict[str, Any]]:
        cursor = self.collection.find(query, sort=sort, hint=hint)
        if limit is not None:
            cursor = cursor.limit(limit)
        return [{k: as_utc(v) for k, v in doc.items()} for doc in cursor]


def to_json(event: dict[str, Any]) -> dict[str, Any]:
    """An event with its dates as ISO strings."""
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in event.items()}


def describe(event: dict[str, Any]) -> str:
    """One line for ``migrate.py history``."""
    at = event.get("at")
    when = (
        at.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        if isinstance(at, dt.datetime)
        else ""
    )
    what = event.get("event", "?")
    parts = [when, f"{what:<17}", f"run {event.get('run_id')}"]
    if event.get("migration"):
        parts.append(str(event["migration"]))
    if event.get("command"):
        parts.append(str(event["command"]))
    if "exit_code" in event:
        parts.append(f"exit {event['exit_code']}")
    if event.get("outcome"):
        parts.append(str(event["outcome"]))
    if event.get("error"):
        parts.append(f"error: {event['error']}")
    if event.get("detail"):
        parts.append(str(event["detail"]))
    parts.append(f"({event.get('host')})")
    return "  ".join(p for p in parts if p)
