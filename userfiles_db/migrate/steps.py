"""Schema and data steps that migrations call: idempotent, dry-run aware, TTL-aware.

Every step takes the database a migration was given (``up(db)``), reads the live state and only
sends what is needed; run twice, the second run changes nothing. In a dry run the migration gets a
read-only database: steps still read (to say precisely what they would do) and report, instead of
sending, each write. Schema steps (create, collMod, index builds) never join a transaction: the
server does not allow them in one on an existing collection.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

from userfiles_db.clock import utc_now
from userfiles_db.migrate.context import context
from userfiles_db.migrate.errors import DryRunWrite, MigrationError, SchemaStepConflict
from userfiles_db.schema import CollectionSchema, IndexSpec

# Reads a migration may make in a dry run; any other call on a collection is refused.
_READS = frozenset(
    {"find", "find_one", "count_documents", "estimated_document_count", "distinct",
     "index_information", "list_indexes", "name", "full_name", "options"}
)  # fmt: skip
_DB_READS = frozenset({"name", "list_collection_names", "list_collections"})


class ReadOnlyCollection:
    """A collection for dry runs: reads pass, writes raise ``DryRunWrite``."""

    def __init__(self, real: Collection[Any]) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        if name in _READS:
            return getattr(self.real, name)
        raise DryRunWrite(
            f"dry run: {self.real.full_name}.{name}() is not a read; this migration writes "
            "outside the steps, so its writes cannot be previewed"
        )


class ReadOnlyDatabase:
    """A database for dry runs: collections are ``ReadOnlyCollection``; commands are refused."""

    def __init__(self, real: Database[Any]) -> None:
        self.real = real

    def __getitem__(self, name: str) -> ReadOnlyCollection:
        return ReadOnlyCollection(self.real[name])

    def __getattr__(self, name: str) -> Any:
        if name in _DB_READS:
            return getattr(self.real, name)
        if name.startswith("_"):
            raise AttributeError(name)
        raise DryRunWrite(f"dry run: database.{name}() is not allowed; only steps can be previewed")


AnyDatabase = Database[Any] | ReadOnlyDatabase


def real_database(db: AnyDatabase) -> Database[Any]:
    return db.real if isinstance(db, ReadOnlyDatabase) else db


def _dry(db: AnyDatabase) -> bool:
    return isinstance(db, ReadOnlyDatabase) or context().dry_run


def _say(line: str) -> None:
    context().report(f"  {line}")


def _collection_info(db: Database[Any], name: str) -> dict[str, Any] | None:
    found = list(db.list_collections(filter={"name": name}))
    return dict(found[0]) if found else None


def server_version(db: Database[Any]) -> tuple[int, ...]:
    return tuple(db.client.server_info()["versionArray"][:3])


# ---------------------------------------------------------------------------------------------
# Schema steps


def ensure_collection(db: AnyDatabase, name: str) -> str:
    """Create collection ``name`` unless it exists."""
    real = real_database(db)
    if _collection_info(real, name) is not None:
        return "exists"
    if _dry(db):
        context().plan(f"create collection {name}")
        return "would create"
    real.create_collection(name)
    _say(f"created collection {name}")
    return "created"


def ensure_validator(
    db: AnyDatabase, name: str, validator: dict[str, Any], *, level: str, action: str
) -> str:
    """Give collection ``name`` this validator, level and action (``collMod`` if they differ).

    Existing documents are not re-checked by the server; ``count_invalid`` tells how many fail.
    """
    real = real_database(db)
    info = _collection_info(real, name)
    if info is None and not _dry(db):
        raise MigrationError(f"collection {name} does not exist; ensure_collection first")
    options = (info or {}).get("options", {})
    current = (
        options.get("validator", {}),
        options.get("validationLevel", "strict"),
        options.get("validationAction", "error"),
    )
    if current == (validator, level, action):
        return "unchanged"
    what = f"collMod {name}: validator ({level}, {action})"
    if _dry(db):
        context().plan(what)
        return "would change"
    real.command("collMod", name, validator=validator, validationLevel=level, validationAction=action)
    _say(what)
    return "changed"


def remove_validator(db: AnyDatabase, name: str) -> str:
    """Drop collection ``name``'s validator (``collMod`` with an empty one)."""
    real = real_database(db)
    info = _collection_info(real, name)
    if info is None or not info.get("options", {}).get("validator"):
        return "unchanged"
    if _dry(db):
        context().plan(f"collMod {name}: remove the validator")
        return "would change"
    real.command("collMod", name, validator={}, validationLevel="strict", validationAction="error")
    _say(f"collMod {name}: validator removed")
    return "changed"


def count_invalid(db: AnyDatabase, name: str, validator: dict[str, Any]) -> int:
    """How many existing documents fail ``validator`` (the server does not re-check them)."""
    real = real_database(db)
    return real[name].count_documents({"$nor": [validator]}, hint="_id_")


def _normalized_key(index: dict[str, Any]) -> list[tuple[str, int]]:
    return [(str(field), int(direction)) for field, direction in index["key"]]


def ttl_warnings(db: AnyDatabase, name: str, field: str, now: dt.datetime | None = None) -> dict[str, int]:
    """Counts to look at before a TTL goes on ``field``: values that are not dates (they never
    expire: a string date is not a date) and dates already past (deleted in a burst at the
    monitor's next pass). Reported through the run context as warnings."""
    real = real_database(db)[name]
    now = now or utc_now()
    counts = {
        "not_a_date": real.count_documents(
            {field: {"$exists": True, "$not": {"$type": ["date", "null"]}}}, hint="_id_"
        ),
        "already_expired": real.count_documents({field: {"$lte": now}}, hint="_id_"),
    }
    if counts["not_a_date"]:
        _say(
            f"warning: {counts['not_a_date']} record(s) of {name} have a {field} that is not a "
            "date; the TTL monitor never deletes them (convert them first)"
        )
    if counts["already_expired"]:
        _say(
            f"warning: {counts['already_expired']} record(s) of {name} are already past {field}; "
            "the TTL monitor deletes them all at its next pass"
        )
    return counts


def _conflict(code: int, text: str) -> SchemaStepConflict:
    names = {85: "IndexOptionsConflict", 86: "IndexKeySpecsConflict"}
    return SchemaStepConflict(f"{text} (MongoDB would refuse it with code {code} {names[code]})")


def ensure_index(db: AnyDatabase, name: str, spec: IndexSpec, *, allow_rebuild: bool | None = None) -> str:
    """Make index ``spec`` exist on collection ``name`` exactly as declared.

    - absent: created (for a TTL index, after ``ttl_warnings``);
    - present with another TTL value, or plain where a TTL is declared: changed in place with
      ``collMod`` (MongoDB 5.1+); on an older server, dropped and re-created only when
      ``allow_rebuild`` (option ``allow_index_rebuild``) is true;
    - a TTL present where a plain index is declared: dropped and re-created when allowed;
    - any other difference (keys, unique, the same keys under another name): ``SchemaStepConflict``
      naming the server's code (85/86) and the fix. Nothing is dropped without permission.
    """
    real = real_database(db)
    ctx = context()
    if allow_rebuild is None:
        allow_rebuild = bool(ctx.option("allow_index_rebuild", False))
    collection = real[name]
    indexes = collection.index_information()
    current = indexes.get(spec.name)
    want_key = list(spec.keys)
    if current is None:
        for other, index in indexes.items():
            if _normalized_key(index) == want_key:
                raise _conflict(
                    85,
                    f"{name}: index {other!r} already covers {dict(spec.keys)}; a second one named "
                    f"{spec.name!r} cannot be created. Drop {other!r} (it is re-created under the "
                    "declared name) or declare that name",
                )
        if spec.expire_after_seconds is not None:
            ttl_warnings(db, name, spec.keys[0][0])
        what = f"create index {spec.name} on {name} {dict(spec.keys)} {spec.create_options()}"
        if _dry(db):
            ctx.plan(what)
            return "would create"
        collection.create_index(want_key, **spec.create_options())
        _say(what)
        return "created"

    if _normalized_key(current) != want_key:
        raise _conflict(
            86,
            f"{name}: index {spec.name!r} has keys {dict(_normalized_key(current))}, declared "
            f"{dict(spec.keys)}; drop it and run again",
        )
    if bool(current.get("unique", False)) != spec.unique:
        raise _conflict(
            86,
            f"{name}: index {spec.name!r} is {'' if current.get('unique') else 'not '}unique, "
            f"declared {'' if spec.unique else 'not '}unique; drop it and run again (check for "
            "duplicates first)",
        )
    have_ttl = current.get("expireAfterSeconds")
    have_ttl = None if have_ttl is None else int(have_ttl)
    if have_ttl == spec.expire_after_seconds:
        return "unchanged"
    if spec.expire_after_seconds is not None:
        return _set_ttl(db, name, spec, have_ttl, allow_rebuild)
    # A TTL index where a plain one is declared: collMod cannot remove a TTL.
    if not allow_rebuild:
        raise _conflict(
            85,
            f"{name}: index {spec.name!r} has a TTL of {have_ttl} s, declared without one; "
            "removing a TTL needs a rebuild: set allow_index_rebuild",
        )
    return _rebuild(db, name, spec)


def _set_ttl(db: AnyDatabase, name: str, spec: IndexSpec, have_ttl: int | None, allow_rebuild: bool) -> str:
    real = real_database(db)
    ttl = spec.expire_after_seconds
    if have_ttl is None:
        ttl_warnings(db, name, spec.keys[0][0])
    version = server_version(real)
    if have_ttl is None and version < (5, 1):
        if not allow_rebuild:
            raise _conflict(
                85,
                f"{name}: MongoDB {'.'.join(map(str, version))} cannot turn the plain index "
                f"{spec.name!r} into a TTL index in place (5.1+ can); set allow_index_rebuild to "
                "drop and re-create it",
            )
        return _rebuild(db, name, spec)
    what = f"collMod {name}: index {spec.name} expireAfterSeconds {have_ttl} -> {ttl} (in place)"
    if _dry(db):
        context().plan(what)
        return "would change"
    real.command("collMod", name, index={"name": spec.name, "expireAfterSeconds": ttl})
    _say(what)
    return "changed"


def _rebuild(db: AnyDatabase, name: str, spec: IndexSpec) -> str:
    real = real_database(db)
    what = f"rebuild index {spec.name} on {name}: drop, then create {spec.create_options()}"
    if _dry(db):
        context().plan(what)
        return "would rebuild"
    real[name].drop_index(spec.name)
    real[name].create_index(list(spec.keys), **spec.create_options())
    _say(what)
    return "rebuilt"


def ensure_schema(
    db: AnyDatabase,
    schema: CollectionSchema,
    *,
    validation_level: str | None = None,
    validation_action: str | None = None,
    indexes: list[str] | None = None,
) -> None:
    """Collection, validator and (the named, or all) indexes of ``schema``."""
    ensure_collection(db, schema.collection)
    ensure_validator(
        db,
        schema.collection,
        schema.validator,
        level=validation_level or schema.validation_level,
        action=validation_action or schema.validation_action,
    )
    for spec in schema.indexes:
        if indexes is None or spec.name in indexes:
            ensure_index(db, schema.collection, spec)


# ---------------------------------------------------------------------------------------------
# Data steps


@dataclass(frozen=True)
class Conversion:
    """What a batched data step did: records changed, records it could not convert."""

    modified: int
    unconvertible: int


def _date_from(expression: Any, timezone: str) -> dict[str, Any]:
    # A string becomes a date (naive strings read in `timezone`); an unparseable string, null, a
    # date or a missing field stays as it is.
    converted = {"$dateFromString": {"dateString": expression, "timezone": timezone, "onError": expression}}
    return {"$cond": [{"$eq": [{"$type": expression}, "string"]}, converted, expression]}


def _string_from(expression: Any, timezone: str) -> dict[str, Any]:
    # The legacy writer's format, datetime.isoformat() of a naive local time (BSON keeps ms).
    converted = {
        "$dateToString": {"date": expression, "format": "%Y-%m-%dT%H:%M:%S.%L000", "timezone": timezone}
    }
    return {"$cond": [{"$eq": [{"$type": expression}, "date"]}, converted, expression]}


LEGACY_RECORDS: dict[str, Any] = {
    "$or": [
        {"uploaded_at": {"$exists": True}},
        {"file_size": {"$exists": True}},
        {"created_at": {"$type": "string"}},
        {"expires_at": {"$type": "string"}},
    ]
}
UNCONVERTIBLE: dict[str, Any] = {
    "$or": [{"created_at": {"$type": "string"}}, {"expires_at": {"$type": "string"}}]
}
CANONICAL_RECORDS: dict[str, Any] = {
    "$or": [
        {"created_at": {"$exists": True}},
        {"size": {"$exists": True}},
        {"expires_at": {"$type": "date"}},
    ]
}


def _reshape(to_legacy: bool, timezone: str) -> list[dict[str, Any]]:
    # One record's fields under the other shape's names, dates converted; whichever name holds a
    # value is read, so a half-converted record (both shapes' fields) is handled too.
    created, size = ("uploaded_at", "file_size") if to_legacy else ("created_at", "size")
    convert = _string_from if to_legacy else _date_from
    return [
        {
            "$set": {
                created: convert({"$ifNull": ["$created_at", "$uploaded_at"]}, timezone),
                size: {"$ifNull": ["$size", "$file_size"]},
                "expires_at": convert("$expires_at", timezone),
            }
        },
        {
            "$unset": [
                n for n in ("created_at", "size", "uploaded_at", "file_size") if n not in (created, size)
            ]
        },
    ]


def legacy_to_canonical(timezone: str) -> list[dict[str, Any]]:
    """The update pipeline that turns one legacy record (the bot's current writer) canonical."""
    return _reshape(to_legacy=False, timezone=timezone)


def canonical_to_legacy(timezone: str) -> list[dict[str, Any]]:
    """The inverse pipeline (dates back to ISO strings, lossy below the millisecond)."""
    return _reshape(to_legacy=True, timezone=timezone)


def batched_update(
    db: AnyDatabase,
    name: str,
    selector: dict[str, Any],
    pipeline: list[dict[str, Any]],
    *,
    label: str,
    batch_size: int | None = None,
    unconvertible: dict[str, Any] | None = None,
) -> Conversion:
    """Apply ``pipeline`` on the server to the records matching ``selector``, one ``_id`` range
    of ``batch_size`` records at a time (one ``update_many`` per range: no document leaves the
    server). ``selector`` must stop matching a record once it is updated: then a run that was
    killed midway simply continues where it stopped. Progress goes to the run context.
    """
    ctx = context()
    real = real_database(db)[name]
    size = int(batch_size or ctx.option("batch_size", 5000))
    if size < 1:
        raise MigrationError(f"batch_size must be at least 1, got {size}")
    if _dry(db):
        pending = real.count_documents(selector, hint="_id_")
        ctx.plan(f"{label}: update {pending} record(s) of {name} on the server, in _id batches of {size}")
        return Conversion(0, 0)
    total = real.estimated_document_count()
    scanned = modified = left = 0
    lower: dict[str, Any] = {}
    while True:
        edge = list(real.find(lower, {"_id": 1}).sort("_id", 1).skip(size - 1).limit(1))
        bounds = {"_id": {**lower.get("_id", {}), "$lte": edge[0]["_id"]}} if edge else lower
        try:
            result = real.update_many({**bounds, **selector}, pipeline, hint="_id_")
        except OperationFailure as exc:
            raise MigrationError(f"{label} on {name} failed: {exc.details or exc}") from exc
        modified += result.modified_count
        if unconvertible is not None:
            left += real.count_documents({**bounds, **unconvertible}, hint="_id_")
        scanned = min(scanned + size, total) if edge else total
        ctx.progress(label, scanned, total)
        if not edge:
            break
        lower = {"_id": {"$gt": edge[0]["_id"]}}
    _say(f"{label}: {modified} record(s) of {name} updated")
    if left:
        _say(f"warning: {left} record(s) of {name} have dates that could not be converted; left as they were")
    return Conversion(modified, left)


def convert_legacy_records(
    db: AnyDatabase, name: str, *, timezone: str | None = None, batch_size: int | None = None
) -> Conversion:
    """Adopt the bot's legacy records in place: ISO-string dates to dates (naive strings read in
    ``timezone``, option ``legacy_timezone``, default UTC), ``uploaded_at`` to ``created_at``,
    ``file_size`` to ``size``. Values that cannot be converted are left untouched and counted.
    No record is deleted. Resumable."""
    tz = timezone or str(context().option("legacy_timezone", "UTC"))
    return batched_update(
        db,
        name,
        LEGACY_RECORDS,
        legacy_to_canonical(tz),
        label="convert legacy records",
        batch_size=batch_size,
        unconvertible=UNCONVERTIBLE,
    )


def revert_to_legacy_records(
    db: AnyDatabase, name: str, *, timezone: str | None = None, batch_size: int | None = None
) -> Conversion:
    """The inverse of ``convert_legacy_records`` (for ``down``): dates back to naive ISO strings
    in ``timezone``, ``created_at`` to ``uploaded_at``, ``size`` to ``file_size``."""
    tz = timezone or str(context().option("legacy_timezone", "UTC"))
    return batched_update(
        db, name, CANONICAL_RECORDS, canonical_to_legacy(tz), label="revert to legacy records",
        batch_size=batch_size,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# For fresh databases (tests, examples)


def create_indexes(collection: Collection[Any], schema: CollectionSchema) -> list[str]:
    """Create the declared indexes (a no-op for an identical existing one); return their names."""
    return [collection.create_index(list(spec.keys), **spec.create_options()) for spec in schema.indexes]


def create_collection(database: Database[Any], schema: CollectionSchema) -> Collection[Any]:
    """Create the collection with its validator and indexes, on a database that lacks it.

    Raises PyMongo's ``CollectionInvalid`` if the collection exists already.
    """
    collection = database.create_collection(
        schema.collection,
        validator=schema.validator,
        validationLevel=schema.validation_level,
        validationAction=schema.validation_action,
    )
    create_indexes(collection, schema)
    return collection
