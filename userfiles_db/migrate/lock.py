"""The migration lock: one lease document, taken by a single atomic operation, and a fence.

The lease is judged by the *server's* clock (``$$NOW``), so runners with skewed clocks agree.
Taking it is one ``findAndModify`` upsert on ``_id: "lock"`` whose update pipeline keeps the
current holder unless the lease has expired (or is ours): there is no check-then-insert window.
A thread renews the lease while migrations run; a holder that is killed simply stops renewing,
and the lease expires on its own.

The lease is also a fence: ``check()`` renews it on the server only if it is still ours (the
holder's run id is the fencing token, compared in the write's filter), and the engine calls it
before every migration and every changelog write (inside the same transaction on replica sets).
A runner whose lease was taken over or force-released finds out there and stops. Renewal errors
count: a holder that could not renew for a whole lease no longer trusts that it holds it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from pymongo import ReturnDocument
from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, PyMongoError, WTimeoutError

from userfiles_db.migrate.changelog import DEFAULT_MAJORITY_TIMEOUT_SECONDS, tool_collection
from userfiles_db.migrate.context import Reporter
from userfiles_db.migrate.errors import LockHeld, LockLost, LockTimeout, StopRequested
from userfiles_db.migrate.retry import RetryTimeout, is_transient, retry_transient
from userfiles_db.records import as_utc

LOCK_ID = "lock"
TAKEN = "the lease is no longer this run's (taken over after it expired, or released by unlock)"


def _free_for(owner: str) -> dict[str, Any]:
    return {
        "$or": [
            {"$eq": [{"$type": "$owner"}, "missing"]},
            {"$eq": ["$owner", owner]},
            {"$lte": ["$expires_at", "$$NOW"]},
        ]
    }


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return str(as_utc(value).strftime("%Y-%m-%d %H:%M:%S UTC"))
    return str(value)


def describe(holder: dict[str, Any]) -> str:
    """``run R on host H (lease until T, last renewed S)`` for messages."""
    renewed = holder.get("renewed_at") or holder.get("acquired_at")
    return (
        f"run {holder.get('owner')} on host {holder.get('host')} (lease until "
        f"{_when(holder.get('expires_at'))}" + (f", last renewed {_when(renewed)}" if renewed else "") + ")"
    )


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
        majority_timeout: float = DEFAULT_MAJORITY_TIMEOUT_SECONDS,
    ) -> None:
        self.collection = tool_collection(db, collection, majority_timeout)
        self.owner = owner
        self.host = host
        self.lease_seconds = lease_seconds
        self.lease_ms = max(int(lease_seconds * 1000), 1)
        self.lost = False
        self.lost_reason = ""
        self.interruptible = False  # the SIGTERM handler may raise while waiting for the lock
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._last_renewed = time.monotonic()

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
                            "renewed_at": keep_or("$$NOW", "renewed_at"),
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

    def acquire(
        self,
        timeout: float,
        poll: float,
        report: Reporter,
        stop_requested: Callable[[], str | None] | None = None,
    ) -> None:
        """Take the lease, waiting up to ``timeout`` seconds; raises ``LockTimeout`` naming the
        holder. While there is no primary (an election, a failover) it keeps waiting, within the
        same bound, and says so. Starts the renewing thread."""
        deadline = time.monotonic() + timeout
        announced: set[str] = set()
        holder: dict[str, Any] = {}
        unreachable: BaseException | None = None
        self.interruptible = True
        try:
            while True:
                reason = stop_requested() if stop_requested is not None else None
                if reason:  # asked to stop before the handler could interrupt us
                    raise StopRequested(reason)
                try:
                    holder = self.try_acquire()
                    unreachable = None
                except PyMongoError as exc:
                    # No primary (an election) or no majority (w: majority timed out): wait.
                    if not (is_transient(exc) or isinstance(exc, WTimeoutError)):
                        raise
                    unreachable = exc
                    if "primary" not in announced:
                        report(
                            f"Waiting for a writable primary (majority) to take the migration lock: "
                            f"{type(exc).__name__}; waiting up to {timeout:g} s..."
                        )
                        announced.add("primary")
                if holder.get("owner") == self.owner and unreachable is None:
                    break
                if time.monotonic() >= deadline:
                    if unreachable is not None:
                        raise LockTimeout(
                            f"no writable primary with a majority answered within {timeout:g} s "
                            f"(lock_timeout_seconds): {type(unreachable).__name__}: {unreachable}"
                        ) from None
                    raise LockTimeout(
                        f"the migration lock is held by {describe(holder)}; waited {timeout:g} s. "
                        "If that runner is dead its lease expires on its own; "
                        "`migrate.py unlock` releases an expired one, `unlock --force` a live one."
                    )
                if holder and "holder" not in announced:
                    report(f"Waiting for the migration lock held by {describe(holder)}...")
                    announced.add("holder")
                time.sleep(poll)
        except StopRequested:
            self.release()
            raise
        finally:
            self.interruptible = False
        self._last_renewed = time.monotonic()
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="migration-lock", daemon=True)
        self._renewer.start()

    def _renew_filter(self) -> dict[str, Any]:
        return {"_id": LOCK_ID, "owner": self.owner}

    def _renew_update(self) -> list[dict[str, Any]]:
        return [{"$set": {"expires_at": {"$add": ["$$NOW", self.lease_ms]}, "renewed_at": "$$NOW"}}]

    def renew(self, session: ClientSession | None = None) -> bool:
        """Extend our lease; False if it is no longer ours (taken over or force-released)."""
        result = self.collection.update_one(self._renew_filter(), self._renew_update(), session=session)
        ok = result.matched_count == 1
        if ok:
            self._last_renewed = time.monotonic()
        return ok

    def _mark_lost(self, reason: str) -> None:
        if not self.lost:
            self.lost = True
            self.lost_reason = reason

    def check(self, session: ClientSession | None = None, *, timeout: float | None = None) -> None:
        """The fence: renew the lease on the server if it is still ours, else raise ``LockLost``.

        With a session (a transaction), the renewal is part of it: a runner that takes the lock
        meanwhile conflicts with it, so the transaction's other writes commit only under our lease.
        Transient errors are retried (within ``timeout``, default one lease) outside transactions.
        """
        if self.lost:
            raise LockLost(self._lost_message())
        if session is not None:
            held = self.renew(session=session)
        else:
            held = retry_transient(
                self.renew, timeout=timeout if timeout is not None else self.lease_seconds, what="lease check"
            )
        if not held:
            self._mark_lost(
                "the lease is no longer this run's (taken over after it expired, or released by unlock)"
            )
            raise LockLost(self._lost_message())

    def _lost_message(self) -> str:
        return (
            f"this run ({self.owner}) no longer holds the migration lock: {self.lost_reason}. It "
            "stopped before writing anything more; another runner may have taken over."
        )

    def _renew_loop(self) -> None:
        interval = max(self.lease_ms / 3000, 0.05)
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    self._mark_lost(TAKEN)
                    return
            except PyMongoError as exc:
                # A blip is retried at the next tick; but after a whole lease without a renewal
                # another runner may hold the lock: this run stops trusting it.
                if time.monotonic() - self._last_renewed >= self.lease_seconds:
                    self._mark_lost(
                        f"it could not be renewed for a whole lease ({type(exc).__name__}: {exc})"
                    )

    def release(self, timeout: float | None = None) -> bool:
        """Stop renewing and delete the lease if it is still ours. Returns False when the server
        could not be reached (the lease is then left to expire on its own)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        try:
            retry_transient(
                lambda: self.collection.delete_one({"_id": LOCK_ID, "owner": self.owner}),
                timeout=timeout if timeout is not None else min(self.lease_seconds, 10.0),
                what="releasing the lock",
            )
        except (PyMongoError, RetryTimeout):
            return False
        return True


def read_lock(db: Database[Any], collection: str) -> dict[str, Any] | None:
    """The current lock document (possibly an expired lease), or ``None``."""
    return tool_collection(db, collection).find_one({"_id": LOCK_ID})


def release_lock(db: Database[Any], collection: str, *, force: bool = False) -> dict[str, Any] | None:
    """Delete the lock if its lease has expired (by the server's clock), or whatever it is with
    ``force``; return what it was (``None`` if there was none).

    Raises ``LockHeld`` naming the holder when the lease is live (its runner is renewing it, or
    died less than a lease ago) and ``force`` is false."""
    collection_ = tool_collection(db, collection)
    if force:
        released: dict[str, Any] | None = collection_.find_one_and_delete({"_id": LOCK_ID})
        return released
    expired = {"_id": LOCK_ID, "$expr": {"$lte": ["$expires_at", "$$NOW"]}}
    deleted: dict[str, Any] | None = collection_.find_one_and_delete(expired)
    if deleted is not None:
        return deleted
    holder = collection_.find_one({"_id": LOCK_ID})
    if holder is None:
        return None
    raise LockHeld(
        f"the migration lock is live: held by {describe(holder)}. Its runner is alive (it renews "
        "the lease) or died less than a lease ago, in which case the lease expires on its own. "
        "`unlock --force` releases it anyway: the holder then stops at its next check."
    )
