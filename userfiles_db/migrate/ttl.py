"""The TTL health report: what the server's TTL monitor is doing, and what it has left behind.

Read-only. Every figure is one bounded query or command (the client's timeouts apply; nothing
loops), and every count goes through the TTL index itself, so it is an index range scan, never a
collection scan (``notablescan`` servers included).

What the server does, which these figures mirror (MongoDB 6.0, seen on 6.0.5):

- the monitor wakes every ``ttlMonitorSleepSecs`` (60 s by default) on the primary only, and
  deletes the records whose field holds a date ``<= now - expireAfterSeconds``; secondaries
  delete nothing on their own, they replicate the primary's deletes;
- a record whose field is missing, null or not a date (a date written as a string included)
  never expires; for an array the earliest date counts;
- a TTL option on a special index (hashed, text, geo) is accepted by ``createIndex`` but the
  monitor skips the index ("special index can't be used as a TTL index"): nothing expires.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

from userfiles_db.clock import to_bson_time, utc_now

# Every BSON type but date, null and array: the type brackets the planner turns into tight index
# bounds, so counting the records that are not dates reads only their keys, not the whole index.
# (An array is indexed by its elements; the empty array has its own clause.)
_NOT_DATE_TYPES = [
    "double", "string", "object", "binData", "undefined", "objectId", "bool", "regex", "dbPointer",
    "javascript", "symbol", "javascriptWithScope", "int", "timestamp", "long", "decimal", "minKey",
    "maxKey",
]  # fmt: skip
_NO_DATE_NOR_NULL = {"$not": {"$type": ["date", "null"]}}


@dataclass(frozen=True)
class Monitor:
    """The server's TTL monitor, as the node that answered saw it. ``None``: not known (the
    command was not permitted; the report's notes say which)."""

    enabled: bool | None  # ttlMonitorEnabled
    sleep_secs: int | None  # ttlMonitorSleepSecs: seconds between passes
    passes: int | None  # serverStatus metrics.ttl.passes, since the server started
    deleted_documents: int | None  # metrics.ttl.deletedDocuments, since the server started
    sub_passes: int | None  # metrics.ttl.subPasses (7.0+; None on 6.0)
    is_primary: bool  # hello isWritablePrimary: only a primary's monitor deletes

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled, "sleep_secs": self.sleep_secs, "passes": self.passes,
            "deleted_documents": self.deleted_documents, "sub_passes": self.sub_passes,
            "is_primary": self.is_primary,
        }  # fmt: skip


@dataclass(frozen=True)
class Overdue:
    """The most overdue record of a TTL index."""

    id: Any  # its _id
    value: dt.datetime  # its date (for an array, the earliest date: the one the server uses)
    seconds_overdue: float  # now - (value + expireAfterSeconds)

    def to_dict(self) -> dict[str, Any]:
        return {"id": _jsonable(self.id), "value": self.value.isoformat(),
                "seconds_overdue": self.seconds_overdue}  # fmt: skip


@dataclass(frozen=True)
class TTLIndex:
    """One TTL index (or a clustered collection's TTL on ``_id``) and its records."""

    collection: str
    index: str
    field: str
    expire_after_seconds: int
    clustered: bool  # the collection-level TTL of a clustered collection (field _id)
    partial_filter: dict[str, Any] | None  # only records matching it are indexed, so expire
    overdue: int  # date <= now - expireAfterSeconds, not deleted yet
    oldest_overdue: Overdue | None
    not_a_date: int  # the field holds neither a date nor null: never deleted
    null_or_missing: int | None  # never expire; None on a sparse index (missing is not indexed)
    total: int  # estimated_document_count of the collection

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection, "index": self.index, "field": self.field,
            "expire_after_seconds": self.expire_after_seconds, "clustered": self.clustered,
            "partial_filter": _jsonable(self.partial_filter), "overdue": self.overdue,
            "oldest_overdue": self.oldest_overdue.to_dict() if self.oldest_overdue else None,
            "not_a_date": self.not_a_date, "null_or_missing": self.null_or_missing,
            "total": self.total,
        }  # fmt: skip


@dataclass(frozen=True)
class TTLReport:
    """Everything ``ttl_report`` found."""

    database: str
    now: dt.datetime  # aware UTC: the instant "overdue" is measured against
    now_source: str  # "server" (hello's localTime), "argument" (given), "client" (no localTime)
    monitor: Monitor
    indexes: tuple[TTLIndex, ...]
    notes: tuple[str, ...]  # what could not be known or is not counted, and why

    @property
    def max_seconds_overdue(self) -> float | None:
        """How overdue the most overdue record of any index is; None when none is overdue."""
        found = [i.oldest_overdue.seconds_overdue for i in self.indexes if i.oldest_overdue]
        return max(found) if found else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database, "now": self.now.isoformat(), "now_source": self.now_source,
            "monitor": self.monitor.to_dict(), "indexes": [i.to_dict() for i in self.indexes],
            "notes": list(self.notes),
        }  # fmt: skip


def ttl_report(
    db: Database[Any], *, collections: Sequence[str] | None = None, now: dt.datetime | None = None
) -> TTLReport:
    """Report the TTL monitor and every TTL index of ``db`` (or of ``collections`` only).

    ``now`` (aware) replaces the server's clock; by default "overdue" is measured against the
    server's own time, so a client's clock skew does not count. Read-only. A diagnostic command
    the user may not run (``getParameter``, ``serverStatus`` need ``clusterMonitor``) leaves its
    figures ``None`` with a note; anything else the server refuses raises ``PyMongoError``.
    Raises ``TypeError`` for a naive ``now``.
    """
    if now is not None and (now.tzinfo is None or now.utcoffset() is None):
        raise TypeError(f"now must be an aware datetime, got {now!r}")
    notes: list[str] = []
    admin = db.client.get_database("admin", read_preference=db.read_preference)
    hello = admin.command("hello")
    if now is not None:
        when, source = to_bson_time(now), "argument"
    elif isinstance(hello.get("localTime"), dt.datetime):
        when, source = to_bson_time(hello["localTime"]), "server"
    else:
        when, source = to_bson_time(utc_now()), "client"
        notes.append("the server sent no localTime: overdue is measured against this machine's clock")
    monitor = _monitor(admin, bool(hello.get("isWritablePrimary")), notes)
    indexes = [
        _measure(db[name], spec, when)
        for name, spec in _ttl_indexes(db, collections, notes)
    ]  # fmt: skip
    return TTLReport(db.name, when, source, monitor, tuple(indexes), tuple(notes))


@dataclass(frozen=True)
class _Spec:
    index: str
    field: str
    expire_after_seconds: int
    clustered: bool = False
    partial_filter: dict[str, Any] | None = None
    sparse: bool = False


def _monitor(admin: Database[Any], is_primary: bool, notes: list[str]) -> Monitor:
    parameters = _optional(
        notes, "getParameter",
        lambda: admin.command("getParameter", 1, ttlMonitorEnabled=1, ttlMonitorSleepSecs=1),
    )  # fmt: skip
    status = _optional(notes, "serverStatus", lambda: admin.command("serverStatus"))
    ttl = ((status or {}).get("metrics") or {}).get("ttl") or {}
    if status is not None and not ttl:
        notes.append("serverStatus has no metrics.ttl: the TTL counters are unknown")
    params = parameters or {}

    def number(value: Any) -> int | None:
        return None if value is None else int(value)

    return Monitor(
        enabled=None if "ttlMonitorEnabled" not in params else bool(params["ttlMonitorEnabled"]),
        sleep_secs=number(params.get("ttlMonitorSleepSecs")),
        passes=number(ttl.get("passes")),
        deleted_documents=number(ttl.get("deletedDocuments")),
        sub_passes=number(ttl.get("subPasses")),
        is_primary=is_primary,
    )


def _optional(notes: list[str], name: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """A diagnostic command whose refusal (Unauthorized, code 13; a hosted tier's "not allowed")
    makes its figures unknown instead of failing the report. Network errors still raise."""
    try:
        return run()
    except OperationFailure as exc:
        code_name = (exc.details or {}).get("codeName", "OperationFailure")
        if exc.code == 13:
            why = "the clusterMonitor role grants it"
            notes.append(
                f"{name} is not permitted ({code_name}, code {exc.code}): its figures are unknown; {why}"
            )
        else:
            notes.append(f"{name} failed ({code_name}, code {exc.code}): its figures are unknown")
        return None


def _ttl_indexes(
    db: Database[Any], collections: Sequence[str] | None, notes: list[str]
) -> Iterator[tuple[str, _Spec]]:
    """Each TTL index the monitor acts on, by collection then index name; notes for the rest."""
    query: dict[str, Any] = {} if collections is None else {"name": {"$in": list(collections)}}
    listed = sorted(db.list_collections(filter=query), key=lambda c: str(c["name"]))
    for missing in sorted(set(collections or ()) - {str(c["name"]) for c in listed}):
        notes.append(f"collection {missing} does not exist")
    for info in listed:
        name, kind, options = str(info["name"]), info.get("type", "collection"), info.get("options") or {}
        if name.startswith("system."):
            continue
        if kind == "timeseries" and options.get("expireAfterSeconds") is not None:
            notes.append(
                f"{name} is a time-series collection with expireAfterSeconds "
                f"{options['expireAfterSeconds']}: its buckets expire as a whole; not reported"
            )
        if kind != "collection":  # views have no indexes; time-series buckets are system.*
            continue
        clustered = options.get("clusteredIndex")
        ttl = _seconds(options.get("expireAfterSeconds"))
        if clustered and ttl is not None:
            index = clustered.get("name", "_id_") if isinstance(clustered, Mapping) else "_id_"
            yield name, _Spec(str(index), "_id", ttl, clustered=True)
        for index_doc in db[name].list_indexes():
            if index_doc.get("expireAfterSeconds") is None:
                continue
            spec = _index_spec(name, index_doc, notes)
            if spec is not None:
                yield name, spec


def _index_spec(collection: str, index: Mapping[str, Any], notes: list[str]) -> _Spec | None:
    label = f"{collection}.{index['name']}"
    key = list(index["key"].items())
    seconds = _seconds(index["expireAfterSeconds"])
    if len(key) != 1:
        notes.append(f"{label} is compound: the server ignores its expireAfterSeconds")
        return None
    if seconds is None:
        notes.append(
            f"{label} has an invalid expireAfterSeconds {index['expireAfterSeconds']!r}: not reported"
        )
        return None
    field, direction = key[0]
    if direction not in (1, -1, 1.0, -1.0):
        notes.append(
            f"{label} is a {direction} index: the TTL monitor skips special indexes, so nothing "
            "expires through it"
        )
        return None
    partial = index.get("partialFilterExpression")
    sparse = bool(index.get("sparse"))
    if sparse:
        notes.append(
            f"{label} is sparse: records without {field} are not in it, so null_or_missing is unknown"
        )
    return _Spec(str(index["name"]), str(field), seconds, partial_filter=dict(partial) if partial else None,
                 sparse=sparse)  # fmt: skip


def _seconds(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def _measure(collection: Collection[Any], spec: _Spec, now: dt.datetime) -> TTLIndex:
    field, hint = spec.field, spec.index
    cutoff = now - dt.timedelta(seconds=spec.expire_after_seconds)

    def where(query: dict[str, Any]) -> dict[str, Any]:
        # A partial index holds only the records matching its filter, and only those expire.
        # 6.0 already limits a hinted count to the index's records, silently; the filter says
        # so in the query instead of relying on that.
        return {"$and": [spec.partial_filter, query]} if spec.partial_filter else query

    def count(query: dict[str, Any]) -> int:
        return collection.count_documents(where(query), hint=hint)

    overdue_query: dict[str, Any] = {field: {"$lte": cutoff}}  # type-bracketed: dates only; any array element
    not_a_date: dict[str, Any]
    if spec.clustered:
        not_a_date = {field: _NO_DATE_NOR_NULL}  # _id: never missing, never an array
    else:
        not_a_date = {"$or": [
            {field: {"$type": _NOT_DATE_TYPES, **_NO_DATE_NOR_NULL}},
            {field: {"$eq": [], **_NO_DATE_NOR_NULL}},
        ]}  # fmt: skip
    oldest = next(collection.find(where(overdue_query), {field: 1}).hint(hint).sort(field, 1).limit(1), None)
    return TTLIndex(
        collection=collection.name, index=spec.index, field=field,
        expire_after_seconds=spec.expire_after_seconds, clustered=spec.clustered,
        partial_filter=spec.partial_filter, overdue=count(overdue_query),
        oldest_overdue=None if oldest is None else _overdue(oldest, spec, now),
        not_a_date=count(not_a_date),
        null_or_missing=None if spec.sparse else count({field: {"$eq": None, "$not": {"$type": "date"}}}),
        total=collection.estimated_document_count(),
    )  # fmt: skip


def _overdue(record: Mapping[str, Any], spec: _Spec, now: dt.datetime) -> Overdue | None:
    dates = [to_bson_time(v) for v in _values(record, spec.field.split(".")) if isinstance(v, dt.datetime)]
    if not dates:  # cannot happen: the query matched a date
        return None
    value = min(dates)  # for an array, the earliest date: the one the server goes by
    expires = value + dt.timedelta(seconds=spec.expire_after_seconds)
    record_id = record.get("_id")
    if isinstance(record_id, dt.datetime):  # a clustered collection's key: aware UTC like the rest
        record_id = to_bson_time(record_id)
    return Overdue(record_id, value, (now - expires).total_seconds())


def _values(value: Any, path: list[str]) -> Iterator[Any]:
    """The values at a dotted path, through arrays as the server's index keys go."""
    if isinstance(value, list):
        for item in value:
            yield from _values(item, path)
    elif not path:
        yield value
    elif isinstance(value, Mapping) and path[0] in value:
        yield from _values(value[path[0]], path[1:])


def _jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO strings (aware UTC) and other BSON types as strings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dt.datetime):
        return to_bson_time(value).isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, ObjectId):
        return str(value)
    return str(value)


_SOURCES = {"server": "the server's clock", "argument": "given", "client": "this machine's clock"}


def describe(report: TTLReport) -> list[str]:
    """The report as an operator reads it: the time, one line per TTL index, the monitor, notes."""
    lines = [f"Now: {report.now:%Y-%m-%d %H:%M:%S} UTC ({_SOURCES[report.now_source]})"]
    lines += [_describe_index(index) for index in report.indexes]
    if not report.indexes:
        lines.append(f"No TTL index in database {report.database}.")
    lines.append(_describe_monitor(report.monitor))
    lines += [f"note: {note}" for note in report.notes]
    return lines


def alerts(report: TTLReport, max_overdue: float | None = None) -> list[str]:
    """What should page someone: a disabled monitor (nothing expires), and, with ``max_overdue``,
    each index holding a record more overdue than that many seconds."""
    found = []
    if report.monitor.enabled is False:
        found.append("the TTL monitor is disabled (ttlMonitorEnabled false): nothing expires")
    for index in report.indexes:
        oldest = index.oldest_overdue
        if max_overdue is not None and oldest is not None and oldest.seconds_overdue > max_overdue:
            found.append(
                f"{index.collection}.{index.index}: a record is {_duration(oldest.seconds_overdue)} "
                f"overdue, more than --max-overdue {max_overdue:g} s"
            )
    return found


def _describe_index(index: TTLIndex) -> str:
    kind = "".join((", clustered" if index.clustered else "", ", partial" if index.partial_filter else ""))
    head = f"{index.collection}.{index.index} ({index.field}, {index.expire_after_seconds} s{kind})"
    overdue = f"{index.overdue} overdue"
    if index.oldest_overdue is not None:
        oldest = index.oldest_overdue
        overdue += f", oldest {_duration(oldest.seconds_overdue)} overdue (_id {_jsonable(oldest.id)})"
    never = (
        "null or missing unknown (sparse index)" if index.null_or_missing is None
        else f"{index.null_or_missing} never expire (null or missing)"
    )  # fmt: skip
    return (
        f"{head}: {overdue}; {index.not_a_date} not a date (never deleted); {never}; ~{index.total} records"
    )


def _describe_monitor(monitor: Monitor) -> str:
    state = {True: "enabled", False: "DISABLED", None: "state unknown"}[monitor.enabled]
    period = "period unknown" if monitor.sleep_secs is None else f"every {monitor.sleep_secs} s"
    if monitor.passes is None or monitor.deleted_documents is None:
        counters = "passes unknown"
    else:
        counters = f"{monitor.passes} passes, {monitor.deleted_documents} deleted"
        if monitor.sub_passes is not None:
            counters += f", {monitor.sub_passes} sub-passes"
    node = (
        "this node is the primary" if monitor.is_primary
        else "this node is not the primary (it deletes nothing itself; it replicates the primary's deletes)"
    )  # fmt: skip
    return f"TTL monitor: {state}, {period}, {counters}; {node}"


def _duration(seconds: float) -> str:
    """Whole seconds, with a rounder figure beside long ones: ``37 s``, ``7200 s (2.0 h)``."""
    whole = f"{math.floor(seconds)} s"
    if seconds < 120:
        return whole
    if seconds < 7200:
        return f"{whole} ({seconds / 60:.0f} min)"
    if seconds < 172800:
        return f"{whole} ({seconds / 3600:.1f} h)"
    return f"{whole} ({seconds / 86400:.1f} d)"


__all__ = ["Monitor", "Overdue", "TTLIndex", "TTLReport", "alerts", "describe", "ttl_report"]
