"""The migration lock: one lease document, taken by a single atomic operation.

The lease is judged by the *server's* clock (``$$NOW``), so runners with skewed clocks agree.
Taking it is one ``findAndModify`` upsert on ``_id: "lock"`` whose update pipeline keeps the
current holder unless the lease has expired (or is ours): there is no check-then-insert window.
A thread renews the lease while migrations run; a holder that is killed simply stops renewing,
and the lease expires on its own.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError

from userfiles_db.migrate.context import Reporter
from userfiles_db.migrate.errors import LockTimeout

LOCK_ID = "lock"


def _free_for(owner: str) -> dict[str, Any]:
    return {
        "$or": [
            {"$eq": [{"$type": "$owner"}, "missing"]},
            {"$eq": ["$owner", owner]},
            {"$lte": ["$expires_at", "$$NOW"]},
        ]
    }


class LeaseLock:
    """The lease in ``db[collection]`` for one runner (``owner`` is its run id)."""

    def __init__(
        self,
        db: Database[Any],
        *,
        collection: str,
        owner: str,
        host: str,
        lease_seconds: float,
    ) -> None:
        self.collection = db[collection]
        self.owner = owner
        self.host = host
        self.lease_ms = int(lease_seconds * 1000)
        self.lost = False
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def try_acquire(self) -> dict[str, Any]:
        """One atomic attempt; returns the lock document as it is now (ours if ``owner`` matches)."""
        free = _free_for(self.owner)

        def keep_or(value: Any, field: str) -> dict[str, Any]:
            return {"$cond": [free, value, f"${field}"]}

        try:
            doc = self.collection.find_one_and_update(
                {"_id": LOCK_ID},
                [
                    {
                        "$set": {
                            "owner": keep_or(self.owner, "owner"),
                            "host": keep_or(self.host, "host"),
                            "acquired_at": keep_or("$$NOW", "acquired_at"),
                            "expires_at": keep_or({"$add": ["$$NOW", self.lease_ms]}, "expires_at"),
                        }
                    }
                ],
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            # Two first-ever upserts raced and the other one inserted: its lease stands.
            doc = self.collection.find_one({"_id": LOCK_ID})
        return doc or {}

    def acquire(self, timeout: float, poll: float, report: Reporter) -> None:
        """Take the lease, waiting up to ``timeout`` seconds; raises ``LockTimeout`` naming the
        holder. Starts the renewing thread."""
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            holder = self.try_acquire()
            if holder.get("owner") == self.owner:
                break
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"the migration lock is held by run {holder.get('owner')} on host "
                    f"{holder.get('host')} (lease until {holder.get('expires_at')} UTC); waited "
                    f"{timeout:g} s. If that runner is dead its lease expires on its own; "
                    "`migrate.py unlock` releases it at once."
                )
            if not announced:
                report(
                    f"Waiting for the migration lock held by run {holder.get('owner')} "
                    f"on host {holder.get('host')}..."
                )
                announced = True
            time.sleep(poll)
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="migration-lock", daemon=True)
        self._renewer.start()

    def renew(self) -> bool:
        """Extend our lease; False if it is no longer ours."""
        result = self.collection.update_one(
            {"_id": LOCK_ID, "owner": self.owner},
            [{"$set": {"expires_at": {"$add": ["$$NOW", self.lease_ms]}}}],
        )
        return result.matched_count == 1

    def _renew_loop(self) -> None:
        interval = max(self.lease_ms / 3000, 0.05)
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    self.lost = True
                    return
            except PyMongoError:
                continue  # a blip: the next renewal may succeed before the lease runs out

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        self.collection.delete_one({"_id": LOCK_ID, "owner": self.owner})


def read_lock(db: Database[Any], collection: str) -> dict[str, Any] | None:
    """The current lock document (possibly an expired lease), or ``None``."""
    return db[collection].find_one({"_id": LOCK_ID})


def force_unlock(db: Database[Any], collection: str) -> dict[str, Any] | None:
    """Delete the lock whoever holds it; return what it was (``None`` if there was none)."""
    return db[collection].find_one_and_delete({"_id": LOCK_ID})
