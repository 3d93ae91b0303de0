"""The changelog: one record per migration, keyed by its id.

States: ``applying`` (written before a non-transactional migration starts; left behind if the
runner dies), ``reverting`` (written before its ``down`` starts; left behind if that is
interrupted), ``failed`` (the migration raised), ``applied`` (written only after it finished, in
the same transaction as its data changes when it runs in one).

Every write is a compare-and-set: it names the record it expects to replace (none, or the state
and run that left it), so a runner that lost the lock can never overwrite what another runner
wrote; such a write raises ``ChangelogConflict``. The tool's own collections are read on the
primary with majority read concern and written with ``w: majority``, whatever the URI says.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ReadPreference
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError
from pymongo.read_concern import ReadConcern
from pymongo.write_concern import WriteConcern

from userfiles_db.migrate.errors import LockLost
from userfiles_db.records import as_utc

APPLYING = "applying"
APPLIED = "applied"
FAILED = "failed"
REVERTING = "reverting"
INTERRUPTED_STATES = (APPLYING, REVERTING, FAILED)

# How long a w: majority write may wait for the majority before the server gives up (it then
# raises WriteConcernFailed, which is retried within the caller's bound): never forever.
DEFAULT_MAJORITY_TIMEOUT_SECONDS = 10.0


class ChangelogConflict(LockLost):
    """A changelog record was not in the state this runner expected: another runner wrote it,
    so this one no longer holds the lock (exit code 1); it stops."""


def tool_settings(majority_timeout: float = DEFAULT_MAJORITY_TIMEOUT_SECONDS) -> dict[str, Any]:
    """How the tool reads and writes its own state, whatever the client's URI says: on the primary,
    majority read concern, ``w: majority`` bounded by ``majority_timeout`` (at least 1 ms: a
    ``wtimeout`` of 0 would mean no bound at all). The keyword arguments of ``get_collection``,
    ``get_database`` and ``start_transaction``."""
    return {
        "read_preference": ReadPreference.PRIMARY,
        "read_concern": ReadConcern("majority"),
        "write_concern": WriteConcern("majority", wtimeout=max(int(majority_timeout * 1000), 1)),
    }


def tool_collection(
    db: Database[Any], name: str, majority_timeout: float = DEFAULT_MAJORITY_TIMEOUT_SECONDS
) -> Collection[Any]:
    """``db[name]`` with ``tool_settings``."""
    return db.get_collection(name, **tool_settings(majority_timeout))


def tool_database(
    db: Database[Any], majority_timeout: float = DEFAULT_MAJORITY_TIMEOUT_SECONDS
) -> Database[Any]:
    """``db`` with ``tool_settings`` (what migrations are given)."""
    return db.client.get_database(db.name, codec_options=db.codec_options, **tool_settings(majority_timeout))


Expect = dict[str, Any] | None  # the record's (state, run_id) a write replaces; None: no record


def expectation(record: dict[str, Any] | None) -> Expect:
    """What a write replacing ``record`` must find (``None``: that there is no record)."""
    if record is None:
        return None
    return {"state": record.get("state"), "run_id": record.get("run_id")}


class Changelog:
    def __init__(
        self, db: Database[Any], collection: str, majority_timeout: float = DEFAULT_MAJORITY_TIMEOUT_SECONDS
    ) -> None:
        self.collection = tool_collection(db, collection, majority_timeout)

    def records(self) -> dict[str, dict[str, Any]]:
        """Every record by migration id (read-only: never creates the collection)."""
        return {
            str(doc["_id"]): {"id": str(doc["_id"]), **{k: as_utc(v) for k, v in doc.items() if k != "_id"}}
            for doc in self.collection.find({}, sort=[("_id", 1)])  # by the _id index: never a scan
        }

    def record(self, migration_id: str, session: ClientSession | None = None) -> dict[str, Any] | None:
        doc = self.collection.find_one({"_id": migration_id}, session=session)
        return None if doc is None else {k: as_utc(v) for k, v in doc.items()}

    def put(
        self,
        migration_id: str,
        expect: Expect,
        record: dict[str, Any],
        session: ClientSession | None = None,
    ) -> None:
        """Replace the record (insert it when ``expect`` is ``None``) if it is still as expected.

        Raises ``ChangelogConflict`` otherwise. A retried write that had already gone through
        (same run, same state) counts as done."""
        try:
            if expect is None:
                self.collection.insert_one({"_id": migration_id, **record}, session=session)
                return
            result = self.collection.replace_one({"_id": migration_id, **expect}, record, session=session)
            if result.matched_count == 1:
                return
        except DuplicateKeyError:
            pass
        now = self.record(migration_id, session=session)
        if (
            now is not None
            and now.get("run_id") == record.get("run_id")
            and now.get("state") == record.get("state")
        ):
            return  # our own earlier attempt, whose reply was lost
        raise ChangelogConflict(
            f"the changelog record of {migration_id} was changed by another run "
            f"(now {(now or {}).get('state', 'absent')} by run {(now or {}).get('run_id')}): this run "
            "no longer holds the migration lock and stopped"
        )

    def set_fields(
        self,
        migration_id: str,
        expect: dict[str, Any],
        fields: dict[str, Any],
        session: ClientSession | None = None,
    ) -> None:
        """``$set`` ``fields`` on the record if it is still as expected (else ``ChangelogConflict``)."""
        result = self.collection.update_one(
            {"_id": migration_id, **expect}, {"$set": fields}, session=session
        )
        if result.matched_count == 1:
            return
        now = self.record(migration_id, session=session)
        if now is not None and all(
            now.get(k) == v for k, v in fields.items() if not isinstance(v, dt.datetime)
        ):
            return  # already set by our own earlier attempt
        raise ChangelogConflict(
            f"the changelog record of {migration_id} was changed by another run: this run no longer "
            "holds the migration lock and stopped"
        )

    def remove(self, migration_id: str, expect: dict[str, Any], session: ClientSession | None = None) -> None:
        """Delete the record if it is still as expected; a record already gone counts as done."""
        result = self.collection.delete_one({"_id": migration_id, **expect}, session=session)
        if result.deleted_count == 0 and self.record(migration_id, session=session) is not None:
            raise ChangelogConflict(
                f"the changelog record of {migration_id} was changed by another run: this run no longer "
                "holds the migration lock and stopped"
            )


def applying_record(
    checksum: str, started: dt.datetime, run: dict[str, Any], state: str = APPLYING
) -> dict[str, Any]:
    return {"state": state, "checksum": checksum, "started_at": started, **run}


def applied_record(
    checksum: str, started: dt.datetime, now: dt.datetime, run: dict[str, Any], stamped: bool = False
) -> dict[str, Any]:
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
    return record
