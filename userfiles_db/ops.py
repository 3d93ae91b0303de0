"""Every user_files operation, written once, free of I/O.

Each operation is a generator (a *plan*) that yields the database calls it needs, one at a time,
and receives each call's result; it raises or returns like a normal function. A runner executes
the calls: ``run_sync`` on a PyMongo (or mongomock) collection, ``run_async`` on an async one. The
query logic, the limit and the eviction choice exist only here, so a sync and an async API cannot
drift apart. The runners bound every operation in time and turn "the database did not answer"
into ``DatabaseUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import pymongo
from pymongo import ReturnDocument
from pymongo.errors import ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError

from userfiles_db import records
from userfiles_db.clock import Clock, read_clock
from userfiles_db.config import Settings
from userfiles_db.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    FileIdConflict,
    InvalidFileData,
    SaveIncomplete,
)
from userfiles_db.schema import CollectionSchema

T = TypeVar("T")
logger = logging.getLogger("userfiles_db.store")
VALIDATION_FAILED = 121
_DELETE_BATCH = 500


@dataclass(frozen=True)
class Find:
    """``find`` whose cursor the runner reads to the end: the result is a list of documents."""

    filter: dict[str, Any]
    projection: dict[str, Any] | None = None

    def call(self, collection: Any) -> Any:
        return collection.find(self.filter, self.projection)


@dataclass(frozen=True)
class Call:
    """Any other collection method; the result is what the method returns (or awaits to)."""

    method: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def call(self, collection: Any) -> Any:
        return getattr(collection, self.method)(*self.args, **self.kwargs)


@dataclass(frozen=True)
class Checkpoint:
    """No I/O: a point where the plan can be told it was interrupted (an asyncio cancel)."""


Op = Find | Call | Checkpoint
Plan = Generator[Op, Any, T]


class _Stepper(Generic[T]):
    """Drives a plan: hands it the outcome of each call it yields (the result, or the exception
    raised, thrown in where the plan waits) and keeps what it finally returns."""

    def __init__(self, plan: Plan[T]) -> None:
        self._plan = plan
        self._resume: Callable[[Any], Op] = plan.send
        self._value: Any = None
        self.result: T

    def next_call(self) -> Op | None:
        """The plan's next call, or ``None`` once it returned (``result`` holds the value)."""
        try:
            return self._resume(self._value)
        except StopIteration as stop:
            self.result = stop.value
            return None

    def give(self, value: Any) -> None:
        self._value, self._resume = value, self._plan.send

    def fail(self, error: BaseException) -> None:
        self._value, self._resume = error, self._plan.throw


def unavailable(operation: str, timeout: float | None, cause: BaseException | None) -> DatabaseUnavailable:
    bound = "" if timeout is None else f" within {timeout:g} s (timeout_seconds)"
    detail = "" if cause is None else f": {type(cause).__name__}: {cause}"
    error = DatabaseUnavailable(f"{operation}: the database did not answer{bound}{detail}")
    error.__cause__ = cause
    return error


def translate(error: Exception, operation: str, timeout: float | None) -> Exception:
    """A driver error that means "unreachable or too slow" as ``DatabaseUnavailable``; others as
    they are."""
    if isinstance(error, ConnectionFailure) or (isinstance(error, PyMongoError) and error.timeout):
        return unavailable(operation, timeout, error)
    return error


_UNBOUNDED = contextlib.nullcontext()


def _bounded(timeout: float | None) -> contextlib.AbstractContextManager[Any]:
    # PyMongo's client-side operation timeout: server selection, connecting, every round trip
    # and the server's maxTimeMS together stay within the bound (Motor copies the context into
    # its executor threads, so it applies there too).
    return _UNBOUNDED if timeout is None else pymongo.timeout(timeout)


def run_sync(
    collection: Any, plan: Plan[T], *, operation: str = "operation", timeout: float | None = None
) -> T:
    """Run ``plan`` against a PyMongo (or mongomock) collection within ``timeout`` seconds; an
    error reaches the plan where it waits, and leaves it if the plan does not handle it."""
    # The loop of _Stepper, inlined: this runs once per call of every operation.
    value: Any = None
    error: Exception | None = None
    with _bounded(timeout):
        while True:
            try:
                op = plan.send(value) if error is None else plan.throw(error)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value = error = None
            if isinstance(op, Checkpoint):
                continue
            try:
                raw = op.call(collection)
                value = list(raw) if isinstance(op, Find) else raw
            except Exception as exc:
                error = translate(exc, operation, timeout)


async def _perform(op: Find | Call, collection: Any) -> Any:
    raw = op.call(collection)
    return await (raw.to_list(None) if isinstance(op, Find) else raw)


_GRACE = 0.5  # the driver's own timeout normally fires first; this is the backstop


async def run_async(
    collection: Any, plan: Plan[T], *, operation: str = "operation", timeout: float | None = None
) -> T:
    """``run_sync`` for an async collection (``pymongo.AsyncMongoClient`` or Motor): the same
    plan, each call awaited, the whole within ``timeout`` seconds.

    A cancel (``task.cancel()``, an enclosing ``asyncio.timeout``) does not abandon a call in
    flight: the runner waits for its outcome (within the bound), gives it to the plan, and throws
    the ``CancelledError`` in at the plan's next step instead of sending that step's call, so a
    save knows exactly what it evicted. (A call that failed or did not finish meanwhile reaches
    the plan as its own error.)
    """
    stepper = _Stepper(plan)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    cancelled: asyncio.CancelledError | None = None
    with _bounded(timeout):
        while (op := _next_or_cancelled(stepper, cancelled)) is not None:
            if cancelled is not None:
                stepper.fail(cancelled)
                continue
            if isinstance(op, Checkpoint):
                stepper.give(None)
                continue
            # The call runs as its own task, so a cancel of the caller does not abandon it. One
            # plain future (woken by the task's end or by the backstop timer) stands in for
            # wait_for(shield(task)): the same outcome, one hop and two futures fewer per call.
            future = loop.create_task(_perform(op, collection))
            waiter = loop.create_future()

            def wake(_: object, waiter: asyncio.Future[None] = waiter) -> None:
                if not waiter.done():
                    waiter.set_result(None)

            future.add_done_callback(wake)
            timer = (
                None if deadline is None else loop.call_at(max(deadline, loop.time()) + _GRACE, wake, None)
            )
            try:
                await waiter
            except asyncio.CancelledError as exc:
                cancelled = exc
                if timer is not None:
                    timer.cancel()
                left = None if deadline is None else max(deadline - loop.time(), 0.0) + _GRACE
                await asyncio.wait({future}, timeout=left)
            finally:
                if timer is not None:
                    timer.cancel()
                future.remove_done_callback(wake)
            if not future.done():
                future.cancel()  # past the bound (with or without a cancel): its outcome is unknown
                stepper.fail(unavailable(operation, timeout, cancelled or asyncio.TimeoutError()))
            elif future.cancelled():
                stepper.fail(cancelled or asyncio.CancelledError())
            elif (error := future.exception()) is not None:
                if not isinstance(error, Exception):
                    raise error
                stepper.fail(translate(error, operation, timeout))
            else:
                stepper.give(future.result())
    if cancelled is not None:
        raise cancelled
    return stepper.result


def _next_or_cancelled(stepper: _Stepper[T], cancelled: asyncio.CancelledError | None) -> Op | None:
    # Once cancelled, an error the plan raises (other than the SaveIncomplete that reports what a
    # save did) leaves as the cancel: the caller asked to stop, not for the error of a call in flight.
    try:
        return stepper.next_call()
    except SaveIncomplete:
        raise
    except Exception as exc:
        if cancelled is None:
            raise
        raise cancelled from exc


def _has_unique_file_id_index(information: Mapping[str, Any]) -> bool:
    for spec in information.values():
        keys = [(name, int(direction)) for name, direction in spec.get("key", [])]
        if keys == [("file_id", 1)] and spec.get("unique"):
            return True
    return False


def _legacy_shaped(document: Mapping[str, Any]) -> bool:
    return any(old in document for old in records.LEGACY_NAMES) or any(
        isinstance(document.get(name), str) for name in ("created_at", "expires_at")
    )


class FileOps:
    """Builds the plans of the operations for one store's settings, schema, clock and legacy rules."""

    def __init__(
        self, settings: Settings, schema: CollectionSchema, clock: Clock, legacy: records.LegacyTime
    ) -> None:
        self.settings = settings
        self.schema = schema
        self.clock = clock
        self.legacy = legacy
        self._unique_index_seen = False  # checked once; a missing index is checked again
        self._legacy_refused = False  # the strict validator refused the last legacy-shaped write

    def now(self) -> dt.datetime:
        return read_clock(self.clock)

    def _live(self, now: dt.datetime) -> dict[str, Any]:
        return records.live_filter(now, self.legacy)

    def _alive(self, docs: list[dict[str, Any]], now: dt.datetime) -> list[dict[str, Any]]:
        return [doc for doc in docs if records.is_live(doc, now, self.legacy)]

    def get_user_files(self, user_id: int) -> Plan[list[dict[str, Any]]]:
        now = self.now()
        docs = yield Find({"user_id": records.check_user_id(user_id), **self._live(now)})
        return records.live_newest_first(docs, now, self.legacy)

    def get_file(self, file_id: str, user_id: int | None) -> Plan[dict[str, Any] | None]:
        now = self.now()
        query = {**records.owner_filter(file_id, user_id), **self._live(now)}
        doc = yield Call("find_one", (query,))
        if doc is None or not records.is_live(doc, now, self.legacy):
            return None
        return records.normalize(doc, self.legacy)

    def claimed_paths(self, user_id: int, paths: object) -> Plan[set[str]]:
        wanted = records.check_paths(paths)
        query_user = records.check_user_id(user_id)
        if not wanted:
            return set()
        now = self.now()
        query = {"user_id": query_user, "file_path": {"$in": sorted(set(wanted))}, **self._live(now)}
        docs = yield Find(query, {"_id": 0, "file_path": 1, "expires_at": 1})
        return {doc["file_path"] for doc in self._alive(docs, now) if doc.get("file_path") in wanted}

    def save_user_file(self, file_data: object) -> Plan[list[dict[str, Any]]]:
        now = self.now()
        prepared = records.prepare_save(file_data, self.settings, self.schema, now, self.legacy)
        yield from self._require_unique_index()
        stored = yield from self._write(prepared)
        record = records.normalize(stored, self.legacy)
        evicted: list[dict[str, Any]] = []
        in_flight: list[dict[str, Any]] = []
        try:
            yield Checkpoint()
            evictable = yield from self._past_the_limit(prepared, now)
            for listed, document_id in evictable:
                in_flight = [listed]
                gone = yield Call("find_one_and_delete", ({"_id": document_id},))
                in_flight = []
                if gone is not None:
                    evicted.append(records.normalize(gone, self.legacy))
            yield Checkpoint()
        except (Exception, asyncio.CancelledError) as exc:
            if isinstance(exc, asyncio.CancelledError):
                in_flight = []  # a cancel is thrown in instead of sending the next call
            raise SaveIncomplete(
                f"save_user_file: record {prepared.file_id!r} was saved, but evicting records over the "
                f"limit was interrupted ({type(exc).__name__}); {len(evicted)} evicted so far",
                record,
                evicted,
                in_flight,
            ) from exc
        return evicted

    def _past_the_limit(
        self, prepared: records.PreparedSave, now: dt.datetime
    ) -> Plan[list[tuple[dict[str, Any], Any]]]:
        # One total order (creation time, then file_id) over the user's live records of this
        # origin, the one just saved included: whatever lies past the newest `limit` goes. Every
        # save lists after its own write, so the last to list sees every record and leaves the
        # newest `limit`; find_one_and_delete hands each evicted record to exactly one caller.
        listing = yield Find(records.limit_listing_filter(prepared, now, self.legacy), records.LISTING_FIELDS)
        ordered = records.newest_first(self._alive(listing, now), self.legacy)
        return ordered[self.settings.limit_for(prepared.origin) :][::-1]  # oldest first

    def _require_unique_index(self) -> Plan[None]:
        if self._unique_index_seen:
            return
        information = yield Call("index_information")
        if not _has_unique_file_id_index(information):
            raise ConfigurationError(
                "user_files has no unique index on file_id, so two records could share one file_id: "
                "run the migrations (`userfiles-migrate up`) before saving"
            )
        self._unique_index_seen = True

    def _write(self, prepared: records.PreparedSave) -> Plan[dict[str, Any]]:
        # Every write tries the legacy shape first, never "from now on": after a rollback's
        # `down` the validator accepts it again, and an old bot must see every record written then.
        if self.settings.write_shape == "legacy":
            try:
                update = prepared.legacy_update(self.legacy)
                stored = yield from self._upsert(prepared, prepared.key, update, convert=False)
                self._legacy_refused = False
                return stored
            except OperationFailure as exc:
                if exc.code != VALIDATION_FAILED:
                    raise
                if not self._legacy_refused:
                    logger.warning(
                        "write_shape 'legacy': the collection's validator refuses the legacy shape (the "
                        "strict validator of migration 0004 is on); writing the canonical shape instead"
                    )
                self._legacy_refused = True
        return (yield from self._upsert(prepared, prepared.canonical_key, prepared.update, convert=True))

    def _upsert(
        self, prepared: records.PreparedSave, key: dict[str, Any], update: dict[str, Any], *, convert: bool
    ) -> Plan[dict[str, Any]]:
        options = {"upsert": True, "return_document": ReturnDocument.AFTER}
        refused: OperationFailure | None = None
        for _ in range(3):
            try:
                stored: dict[str, Any] = yield Call("find_one_and_update", (key, update), options)
                return stored
            except DuplicateKeyError:
                # The unique file_id index refused the insert: another user owns this file_id
                # (refuse, never overwrite), a concurrent save of the same new file won the insert
                # (retry: now an update), or the record is stored in the legacy shape (convert).
                pass
            except OperationFailure as exc:
                if exc.code != VALIDATION_FAILED or not convert:
                    raise
                refused = exc  # an old-shaped record the strict validator will not update: convert
            existing = yield Call("find_one", ({"file_id": prepared.file_id},))
            if existing is None:
                continue
            if existing.get("user_id") != prepared.user_id:
                raise FileIdConflict(
                    f"file_id: {prepared.file_id!r} belongs to another user; not overwritten"
                )
            if not _legacy_shaped(existing) and refused is None:
                continue
            if not convert:
                continue
            merged = prepared.merged_with(existing, self.legacy)
            try:
                replaced = yield Call(
                    "find_one_and_replace",
                    ({"_id": existing["_id"], **prepared.key}, merged),
                    {"return_document": ReturnDocument.AFTER},
                )
            except OperationFailure as exc:
                if exc.code != VALIDATION_FAILED:
                    raise
                raise InvalidFileData(
                    f"file_data: the server's validator refused record {prepared.file_id!r}: {exc}"
                ) from None
            if replaced is not None:
                return dict(replaced)
        if refused is not None:
            raise InvalidFileData(
                f"file_data: the server's validator refused record {prepared.file_id!r}: {refused}"
            )
        raise DuplicateKeyError(
            f"save_user_file: could not save {prepared.file_id!r} (the record kept changing)"
        )

    def delete_user_file(self, file_id: str, user_id: int | None) -> Plan[bool]:
        result = yield Call("delete_one", (records.owner_filter(file_id, user_id),))
        return bool(result.deleted_count)

    def take_file(self, file_id: str, user_id: int | None) -> Plan[dict[str, Any] | None]:
        doc = yield Call("find_one_and_delete", (records.owner_filter(file_id, user_id),))
        return None if doc is None else records.normalize(doc, self.legacy)

    def delete_all_user_files(self, user_id: int) -> Plan[list[dict[str, Any]]]:
        # Expired records too: their files are on disk as well.
        docs = yield Find({"user_id": records.check_user_id(user_id)})
        if docs:
            # Only the records listed (and so reported) are deleted; one saved meanwhile stays.
            yield Call("delete_many", ({"_id": {"$in": [doc["_id"] for doc in docs]}},))
        return [record for record, _ in records.newest_first(docs, self.legacy)]

    def delete_expired_files(self) -> Plan[int]:
        now = self.now()
        result = yield Call("delete_many", (records.expired_filter(now),))
        count = int(result.deleted_count)
        if not self.legacy.in_queries:
            return count
        # Legacy string expiries are decided here, exactly: only those every reading of which is
        # past goes (an ambiguous or unparseable one stays), and only if still the same string.
        strings = yield Find(records.STRING_EXPIRY_FILTER, {"_id": 1, "expires_at": 1})
        doomed = [doc for doc in strings if records.surely_expired(doc["expires_at"], now, self.legacy)]
        for start in range(0, len(doomed), _DELETE_BATCH):
            batch = doomed[start : start + _DELETE_BATCH]
            query = {"$or": [{"_id": doc["_id"], "expires_at": doc["expires_at"]} for doc in batch]}
            result = yield Call("delete_many", (query,))
            count += int(result.deleted_count)
        return count
