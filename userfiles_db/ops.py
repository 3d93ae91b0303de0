"""Every user_files operation, written once, free of I/O.

Each operation is a generator (a *plan*) that yields the database calls it needs, one at a time,
and receives each call's result; it raises or returns like a normal function. A runner executes
the calls: ``run_sync`` on a PyMongo (or mongomock) collection. The query logic, the limit and
the eviction choice exist only here, so a sync and an async API cannot drift apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pymongo.errors import DuplicateKeyError

from userfiles_db import records
from userfiles_db.clock import Clock, read_clock
from userfiles_db.config import Settings
from userfiles_db.errors import FileIdConflict
from userfiles_db.schema import CollectionSchema

T = TypeVar("T")


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


Op = Find | Call
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

    def fail(self, error: Exception) -> None:
        self._value, self._resume = error, self._plan.throw


def run_sync(collection: Any, plan: Plan[T]) -> T:
    """Run ``plan`` against a PyMongo (or mongomock) collection; an error reaches the plan where
    it waits, and leaves it if the plan does not handle it."""
    stepper = _Stepper(plan)
    while (op := stepper.next_call()) is not None:
        try:
            raw = op.call(collection)
            stepper.give(list(raw) if isinstance(op, Find) else raw)
        except Exception as exc:
            stepper.fail(exc)
    return stepper.result


async def run_async(collection: Any, plan: Plan[T]) -> T:
    """``run_sync`` for an async collection (``pymongo.AsyncMongoClient`` or Motor): the same
    plan, each call awaited."""
    stepper = _Stepper(plan)
    while (op := stepper.next_call()) is not None:
        try:
            raw = op.call(collection)
            stepper.give(await (raw.to_list(None) if isinstance(op, Find) else raw))
        except Exception as exc:
            stepper.fail(exc)
    return stepper.result


class FileOps:
    """Builds the plans of the operations for one store's settings, schema, clock and legacy rules."""

    def __init__(
        self, settings: Settings, schema: CollectionSchema, clock: Clock, legacy: records.LegacyTime
    ) -> None:
        self.settings = settings
        self.schema = schema
        self.clock = clock
        self.legacy = legacy

    def now(self) -> dt.datetime:
        return read_clock(self.clock)

    def _live(self) -> dict[str, Any]:
        return records.live_filter(self.now(), self.legacy)

    def get_user_files(self, user_id: int) -> Plan[list[dict[str, Any]]]:
        query = {"user_id": records.check_user_id(user_id), **self._live()}
        docs = yield Find(query)
        return [record for record, _ in records.newest_first(docs, self.legacy)]

    def get_file(self, file_id: str, user_id: int | None) -> Plan[dict[str, Any] | None]:
        query = {**records.owner_filter(file_id, user_id), **self._live()}
        doc = yield Call("find_one", (query,))
        return None if doc is None else records.normalize(doc, self.legacy)

    def save_user_file(self, file_data: object) -> Plan[list[dict[str, Any]]]:
        now = self.now()
        prepared = records.prepare_save(file_data, self.settings, self.schema, now, self.legacy)
        upsert = Call("update_one", (prepared.key, prepared.update), {"upsert": True})
        try:
            yield upsert
        except DuplicateKeyError:
            # The unique file_id index refused the insert: either another user owns this file_id
            # (refuse, never overwrite), or a concurrent save of the same new file won the insert
            # (then the retry is a plain update).
            owner = yield Call("find_one", ({"file_id": prepared.file_id}, {"_id": 0, "user_id": 1}))
            if owner is not None and owner.get("user_id") != prepared.user_id:
                raise FileIdConflict(
                    f"file_id: {prepared.file_id!r} belongs to another user; not overwritten"
                ) from None
            yield upsert
        return (yield from self._evict_over_limit(prepared, now))

    def _evict_over_limit(
        self, prepared: records.PreparedSave, now: dt.datetime
    ) -> Plan[list[dict[str, Any]]]:
        # The saved record counts as one of the limit and is never a candidate. Every save lists
        # after its own write, so the last lister sees every record and leaves at most the limit
        # however saves interleave; find_one_and_delete hands each evicted record to exactly one
        # caller, which reports it.
        others = yield Find(
            records.eviction_candidates_filter(prepared, now, self.legacy), records.EVICTION_FIELDS
        )
        keep = self.settings.max_files_per_user - 1
        over = records.newest_first(others, self.legacy)[keep:]
        evicted = []
        for _, document_id in over:
            gone = yield Call("find_one_and_delete", ({"_id": document_id},))
            if gone is not None:
                evicted.append(records.normalize(gone, self.legacy))
        return evicted

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
        result = yield Call("delete_many", (records.expired_filter(self.now(), self.legacy),))
        return int(result.deleted_count)
