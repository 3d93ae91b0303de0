"""Schema and data steps that migrations call: idempotent, dry-run aware, TTL-aware.

Every step takes the database a migration was given (``up(db)``), reads the live state and only
sends what is needed; run twice, the second run changes nothing. In a dry run the migration gets a
read-only database: steps still read (to say precisely what they would do) and report, instead of
sending, each write. Schema steps (create, collMod, index builds) never join a transaction: the
server does not allow them in one on an existing collection.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ParamSpec, TypeVar

import bson
from bson import MaxKey, ObjectId
from bson.codec_options import CodecOptions, DatetimeConversion
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

from userfiles_db.clock import utc_now
from userfiles_db.migrate.context import context
from userfiles_db.migrate.drift import direction as _direction
from userfiles_db.migrate.drift import option_differences
from userfiles_db.migrate.errors import MigrationError, SchemaStepConflict
from userfiles_db.migrate.retry import retry_transient
from userfiles_db.schema import CollectionOptions, CollectionSchema, IndexSpec, server_capped_size

T = TypeVar("T")
P = ParamSpec("P")

# ---------------------------------------------------------------------------------------------
# Dry runs: a read-only database that carries the plan
#
# ``up --dry-run`` gives every pending migration the same ``ReadOnlyDatabase``. Steps read the
# live state through it and record what they would change in its overlay (collections created,
# validators set, indexes created, changed or dropped, TTLs, data updates); later steps, and the
# later migrations of the same run, read the state the earlier ones would leave. A migration's
# own writes (outside the steps) are not sent: each is reported as "would run custom code".

# Collection methods that only read; everything else a migration calls is custom code.
_READS = frozenset(
    {"find", "find_one", "count_documents", "estimated_document_count", "distinct",
     "list_search_indexes", "find_raw_batches", "watch", "name", "full_name", "codec_options",
     "read_preference", "write_concern", "read_concern"}
)  # fmt: skip
_DB_READS = frozenset(
    {"name", "codec_options", "read_preference", "write_concern", "read_concern",
     "validate_collection", "dereference"}
)  # fmt: skip
# Commands that only read (a dry run passes them to the server).
_READ_COMMANDS = frozenset(
    {"ping", "hello", "ismaster", "buildinfo", "serverstatus", "collstats", "dbstats",
     "listcollections", "listindexes", "count", "distinct", "find", "explain", "hostinfo",
     "getparameter", "connectionstatus", "replsetgetstatus", "validate", "datasize"}
)  # fmt: skip
_WRITE_STAGES = ("$out", "$merge")
_SHOWN_ARGUMENTS = 160


class DryRunResult:
    """What custom code gets back in a dry run: nothing was sent, so every count is 0 and it is
    false and empty; an attribute or item of it is another ``DryRunResult``
    (``result.modified_count`` converts to 0). Calling one that stands for a method (what a
    migration reached outside the steps, or a method of what such a call returned) is
    reported as "would run custom code: <call>" and not sent."""

    def __init__(self, path: str = "") -> None:
        self._path = path

    def _then(self, suffix: str) -> DryRunResult:
        return DryRunResult(f"{self._path}{suffix}") if self._path else self

    def __getattr__(self, name: str) -> DryRunResult:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._then(f".{name}")

    def __getitem__(self, key: Any) -> DryRunResult:
        return self._then(f"[{key!r}]")

    def __call__(self, *args: Any, **kwargs: Any) -> DryRunResult:
        if not self._path:
            return self
        call = f"{self._path}({_arguments(args, kwargs)})"
        context().plan(f"run custom code: {call}")
        return DryRunResult(call)

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __int__(self) -> int:
        return 0

    def __index__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "<dry run: not sent>"


def _arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    shown = ", ".join([*(repr(a) for a in args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    return shown if len(shown) <= _SHOWN_ARGUMENTS else shown[: _SHOWN_ARGUMENTS - 3] + "..."


_CustomCode = DryRunResult


def _holds_dry_result(value: Any) -> bool:
    """Whether ``value`` (arguments of a read) holds what custom code got back in the dry run
    (e.g. ``result.inserted_id``): such a read cannot be sent, the server never saw the write."""
    if isinstance(value, DryRunResult):
        return True
    if isinstance(value, dict):
        return any(_holds_dry_result(k) or _holds_dry_result(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return any(_holds_dry_result(item) for item in value)
    return False


class ReadOnlyCollection:
    """A collection for dry runs: reads pass to the server (index and options reads see the
    planned state); writes are reported as custom code and not sent."""

    def __init__(self, database: ReadOnlyDatabase, name: str, **options: Any) -> None:
        self.preview = database
        self.real: Collection[Any] = database.real.get_collection(name, **options)

    @property
    def database(self) -> ReadOnlyDatabase:
        return self.preview

    def with_options(self, **options: Any) -> ReadOnlyCollection:
        return ReadOnlyCollection(self.preview, self.real.name, **options)

    def index_information(self) -> dict[str, Any]:
        return self.preview.index_information(self.real.name)

    def options(self) -> dict[str, Any]:
        info = self.preview.collection_info(self.real.name)
        return dict((info or {}).get("options", {}))

    def list_indexes(self, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        indexes = self.preview.index_information(self.real.name)
        return iter([{"name": name, **info, "key": dict(info["key"])} for name, info in indexes.items()])

    def aggregate(self, pipeline: list[dict[str, Any]], *args: Any, **kwargs: Any) -> Any:
        if _holds_dry_result((pipeline, args, kwargs)) or any(
            stage in step for step in pipeline for stage in _WRITE_STAGES
        ):
            return _CustomCode(f"{self.real.name}.aggregate")(pipeline, *args, **kwargs)
        return self.real.aggregate(pipeline, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in _READS:
            found = getattr(self.real, name)
            if not callable(found):
                return found

            def read(*args: Any, **kwargs: Any) -> Any:
                if _holds_dry_result((args, kwargs)):  # reads what custom code would have written
                    return _CustomCode(f"{self.real.name}.{name}")(*args, **kwargs)
                return found(*args, **kwargs)

            return read
        if name.startswith("_"):
            raise AttributeError(name)
        return _CustomCode(f"{self.real.name}.{name}")


@dataclass
class _Planned:
    """One collection's state as the planned steps would leave it."""

    options: dict[str, Any]
    indexes: dict[str, dict[str, Any]]
    updates: list[tuple[dict[str, Any], list[dict[str, Any]]]] = field(default_factory=list)


class ReadOnlyDatabase:
    """A database for dry runs, carrying the plan: the state the steps planned so far is what
    later steps (and later migrations of the same dry run) read. Nothing is written."""

    def __init__(self, real: Database[Any]) -> None:
        self.real = real
        self._planned: dict[str, _Planned] = {}
        self._exists: dict[str, bool] = {}

    # -- what steps read ------------------------------------------------------------------

    def collection_info(self, name: str) -> dict[str, Any] | None:
        """``listCollections``' entry for ``name`` as the plan leaves it (None: absent)."""
        planned = self._planned.get(name)
        if planned is None:
            return _live_collection_info(self.real, name)
        if not self._exists.get(name, True):
            return None
        return {"name": name, "type": "collection", "options": copy.deepcopy(planned.options)}

    def index_information(self, name: str) -> dict[str, Any]:
        """``index_information()`` of ``name`` as the plan leaves it."""
        planned = self._planned.get(name)
        if planned is None:
            return dict(self.real[name].index_information())
        return copy.deepcopy(planned.indexes)

    def list_collections(
        self, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> Iterator[dict[str, Any]]:
        """``listCollections`` as the plan leaves it (a filter other than ``{"name": ...}`` sees
        the live collections only)."""
        found = [dict(info) for info in self.real.list_collections(filter=filter, **kwargs)]
        if filter and set(filter) != {"name"}:
            return iter(found)
        by_name = {info["name"]: info for info in found}
        for name in self._planned:
            if filter and filter["name"] != name:
                continue
            info = self.collection_info(name)
            if info is None:
                by_name.pop(name, None)
            else:
                by_name[name] = {**by_name.get(name, {}), **info}
        return iter(by_name[name] for name in sorted(by_name))

    def list_collection_names(self, *args: Any, **kwargs: Any) -> list[str]:
        names = set(self.real.list_collection_names(*args, **kwargs))
        for name, exists in self._exists.items():
            (names.add if exists else names.discard)(name)
        return sorted(names)

    def count(self, name: str, query: dict[str, Any]) -> int:
        """How many records of ``name`` would match ``query`` once the planned data updates
        ran (each applied, in order, to the records its selector matches)."""
        collection = self.real[name]
        planned = self._planned.get(name)
        updates = planned.updates if planned else []
        if not updates:
            return collection.count_documents(query, hint="_id_")
        # Every path a record can take through the updates (matched or not by each selector) is
        # one facet: one pass over the collection, only counts come back.
        facets: dict[str, list[dict[str, Any]]] = {}
        for n, path in enumerate(itertools.product((False, True), repeat=len(updates))):
            stages: list[dict[str, Any]] = []
            for taken, (selector, pipeline) in zip(path, updates, strict=True):
                stages += [{"$match": selector}, *pipeline] if taken else [{"$match": {"$nor": [selector]}}]
            facets[f"p{n}"] = [*stages, {"$match": query}, {"$count": "n"}]
        found = next(collection.aggregate([{"$facet": facets}], hint="_id_"))
        return sum(int(result[0]["n"]) for result in found.values() if result)

    # -- what steps plan ------------------------------------------------------------------

    def _state(self, name: str) -> _Planned:
        if name not in self._planned:
            info = _live_collection_info(self.real, name)
            indexes = dict(self.real[name].index_information()) if info is not None else {}
            self._planned[name] = _Planned(dict((info or {}).get("options", {})), indexes)
            self._exists[name] = info is not None
        return self._planned[name]

    def plan_collection(self, name: str, options: dict[str, Any] | None = None) -> None:
        """Record collection ``name`` as created (with ``create_collection``'s ``options``)."""
        state = self._state(name)
        if not self._exists[name]:
            self._exists[name] = True
            state.indexes = {"_id_": {"v": 2, "key": [("_id", 1)]}}
            state.options = _created_options(options or {})
            state.updates = []

    def plan_drop_collection(self, name: str) -> None:
        state = self._state(name)
        self._exists[name] = False
        state.options, state.indexes, state.updates = {}, {}, []

    def plan_options(self, name: str, **options: Any) -> None:
        self.plan_collection(name)
        self._state(name).options.update(options)

    def planned_collections(self) -> list[str]:
        """The collections the planned steps change (create, drop, options, indexes, data)."""
        return sorted(self._planned)

    def collection_options(self, name: str) -> dict[str, Any]:
        return self._state(name).options

    def plan_index(self, name: str, spec: IndexSpec | None, drop: str | None = None) -> None:
        """Record ``spec`` as created (or replacing the index of its name); ``drop`` an index."""
        self.plan_collection(name)
        indexes = self._state(name).indexes
        if drop is not None:
            indexes.pop(drop, None)
        if spec is not None:
            options = {k: v for k, v in spec.create_options().items() if k != "name"}
            indexes[spec.name] = {"v": 2, "key": list(spec.keys), **options}

    def plan_ttl(self, name: str, index: str, seconds: int) -> None:
        self._state(name).indexes[index]["expireAfterSeconds"] = seconds

    def plan_update(self, name: str, selector: dict[str, Any], pipeline: list[dict[str, Any]]) -> None:
        self._state(name).updates.append((selector, pipeline))

    # -- what a migration reaches directly ------------------------------------------------

    def __getitem__(self, name: str) -> ReadOnlyCollection:
        return ReadOnlyCollection(self, name)

    def get_collection(self, name: str, **options: Any) -> ReadOnlyCollection:
        return ReadOnlyCollection(self, name, **options)

    def with_options(self, **options: Any) -> ReadOnlyDatabase:
        """The same dry run (its plan shared) through a database with other options."""
        other = ReadOnlyDatabase(self.real.with_options(**options))
        other._planned, other._exists = self._planned, self._exists
        return other

    def command(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        name = command if isinstance(command, str) else next(iter(command), "")
        if str(name).lower() in _READ_COMMANDS:
            return self.real.command(command, *args, **kwargs)
        return _CustomCode("database.command")(command, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in _DB_READS:
            return getattr(self.real, name)
        if name.startswith("_"):
            raise AttributeError(name)
        if hasattr(Database, name):  # a method: create_collection, drop_collection, client...
            return _CustomCode(f"database.{name}")
        return ReadOnlyCollection(self, name)  # db.user_files, as PyMongo allows


AnyDatabase = Database[Any] | ReadOnlyDatabase


def _created_options(options: dict[str, Any]) -> dict[str, Any]:
    """``listCollections``' options of a collection created with ``options`` (the server's
    rounding of a capped size; a clustered index's full description)."""
    created = copy.deepcopy(options)
    if created.get("capped"):
        created["size"] = server_capped_size(int(created["size"]))
    if "clusteredIndex" in created:
        created["clusteredIndex"] = {"v": 2, "key": {"_id": 1}, "name": "_id_", "unique": True}
    return created


def real_database(db: AnyDatabase) -> Database[Any]:
    return db.real if isinstance(db, ReadOnlyDatabase) else db


def _view(db: AnyDatabase) -> AnyDatabase:
    """``db``; in a dry run given a real database, a read-only one (with a plan of its own)."""
    if isinstance(db, ReadOnlyDatabase) or not context().dry_run:
        return db
    return ReadOnlyDatabase(db)


def _dry(db: AnyDatabase) -> bool:
    return isinstance(db, ReadOnlyDatabase) or context().dry_run


def _say(line: str) -> None:
    context().report(f"  {line}")


def _live_collection_info(db: Database[Any], name: str) -> dict[str, Any] | None:
    found = list(db.list_collections(filter={"name": name}))
    return dict(found[0]) if found else None


def collection_info(db: AnyDatabase, name: str) -> dict[str, Any] | None:
    """``name``'s ``listCollections`` entry, as the dry run's plan leaves it in a dry run."""
    if isinstance(db, ReadOnlyDatabase):
        return db.collection_info(name)
    return _live_collection_info(db, name)


def index_information(db: AnyDatabase, name: str) -> dict[str, Any]:
    if isinstance(db, ReadOnlyDatabase):
        return db.index_information(name)
    return dict(db[name].index_information())


def _count(db: AnyDatabase, name: str, query: dict[str, Any]) -> int:
    """Records of ``name`` matching ``query`` (after the planned data updates, in a dry run)."""
    if isinstance(db, ReadOnlyDatabase):
        return db.count(name, query)
    return db[name].count_documents(query, hint="_id_")


#: How long a schema step keeps retrying through a failover before it fails.
SCHEMA_RETRY_SECONDS = 60.0


def _through_failovers(step: Callable[P, T]) -> Callable[P, T]:
    """Run the whole step again (it reads the state first, so it is idempotent) when the server
    has no primary for a moment: a step-down, an election, a restart, a dropped connection."""

    @functools.wraps(step)
    def retried(*args: P.args, **kwargs: P.kwargs) -> T:
        subject = f" on {args[1]}" if len(args) > 1 else ""
        return retry_transient(
            partial(step, *args, **kwargs), timeout=SCHEMA_RETRY_SECONDS, what=f"{step.__name__}{subject}"
        )

    return retried


def server_version(db: Database[Any]) -> tuple[int, ...]:
    return tuple(db.client.server_info()["versionArray"][:3])


# ---------------------------------------------------------------------------------------------
# Schema steps


@_through_failovers
def ensure_collection(db: AnyDatabase, name: str, options: CollectionOptions | None = None) -> str:
    """Create collection ``name`` unless it exists, with ``options`` (collation, capped,
    clustered). MongoDB fixes those at creation: an existing collection whose options differ
    raises ``SchemaStepConflict`` (nothing is changed), except a clustered collection's TTL,
    which ``collMod`` changes in place."""
    db = _view(db)
    real = real_database(db)
    wanted = options or CollectionOptions()
    info = _reopen_if_left_closed(db, name, collection_info(db, name))
    if info is not None:
        if options is None:
            return "exists"
        return _align_collection(db, name, wanted, info.get("options", {}))
    create = wanted.create_options()
    what = f"create collection {name}" + (f" {create}" if create else "")
    if isinstance(db, ReadOnlyDatabase):
        context().plan(what)
        db.plan_collection(name, create)
        return "would create"
    context().fence()
    real.create_collection(name, **create)
    _say(what)
    return "created"


def _align_collection(db: AnyDatabase, name: str, wanted: CollectionOptions, live: dict[str, Any]) -> str:
    differences = option_differences(wanted, live)
    fixed = [d for d in differences if d[0] != "expireAfterSeconds"]
    if fixed:
        shown = "; ".join(f"{option}: declared {want!r}, live {have!r}" for option, want, have in fixed)
        raise SchemaStepConflict(
            f"{name}: collection options are fixed when a collection is created ({shown}). "
            "Changing them means copying the records into a new collection: do it by hand"
        )
    if not differences:
        return "exists"
    if not live.get("clusteredIndex"):  # option_differences reported clustered too otherwise
        raise SchemaStepConflict(f"{name}: a collection TTL needs a clustered collection")
    ttl = wanted.expire_after_seconds
    what = f"collMod {name}: expireAfterSeconds {live.get('expireAfterSeconds')} -> {ttl} (in place)"
    if isinstance(db, ReadOnlyDatabase):
        context().plan(what)
        planned = db.collection_options(name)
        if ttl is None:
            planned.pop("expireAfterSeconds", None)
        else:
            planned["expireAfterSeconds"] = ttl
        return "would change"
    context().fence()
    real_database(db).command("collMod", name, expireAfterSeconds="off" if ttl is None else ttl)
    _say(what)
    return "changed"


@_through_failovers
def drop_index(db: AnyDatabase, name: str, index: str) -> str:
    """Drop index ``index`` of collection ``name`` if it exists (no record is lost)."""
    db = _view(db)
    if index == "_id_":
        raise MigrationError(f"{name}: the _id_ index cannot be dropped")
    if collection_info(db, name) is None or index not in index_information(db, name):
        return "absent"
    what = f"drop index {index} on {name}"
    if isinstance(db, ReadOnlyDatabase):
        context().plan(what)
        db.plan_index(name, None, drop=index)
        return "would drop"
    context().fence()
    real_database(db)[name].drop_index(index)
    _say(what)
    return "dropped"


#: The validator ``drop_collection_if_empty`` closes a collection with (nothing passes it). A
#: collection found with it was left closed by an interrupted run: the steps reopen it.
CLOSED_VALIDATOR: dict[str, Any] = {"$expr": False}
_OPEN: dict[str, Any] = {"validator": {}, "validationLevel": "strict", "validationAction": "error"}


def _validation(options: dict[str, Any]) -> dict[str, Any]:
    """A collection's validator, level and action as ``collMod`` takes them; a collection left
    closed by an interrupted run had no validator of its own to give back."""
    if options.get("validator") == CLOSED_VALIDATOR:
        return dict(_OPEN)
    return {key: options.get(key, default) for key, default in _OPEN.items()}


def _reopen_if_left_closed(db: AnyDatabase, name: str, info: dict[str, Any] | None) -> dict[str, Any] | None:
    """Open collection ``name`` to writes again when an interrupted ``drop_collection_if_empty``
    left it closed (every write refused); return its ``listCollections`` entry as it is then."""
    if info is None or info.get("options", {}).get("validator") != CLOSED_VALIDATOR:
        return info
    what = f"collMod {name}: reopen to writes (left closed by an interrupted run)"
    if isinstance(db, ReadOnlyDatabase):
        context().plan(what)
        db.plan_options(name, **_OPEN)
    else:
        context().fence()
        real_database(db).command("collMod", name, **_OPEN)
        _say(what)
    return collection_info(db, name)


@_through_failovers
def drop_collection_if_empty(db: AnyDatabase, name: str) -> str:
    """Drop collection ``name`` when it holds no record (what undoing its creation means);
    a collection with records is kept, and said so: a down migration never drops data."""
    db = _view(db)
    info = collection_info(db, name)
    if info is None:
        return "absent"
    records = _count(db, name, {})
    if records:
        _reopen_if_left_closed(db, name, info)
        _say(f"kept collection {name}: it holds {records} record(s), which a migration never drops")
        return "kept"
    what = f"drop collection {name} (empty)"
    if isinstance(db, ReadOnlyDatabase):
        context().plan(what)
        db.plan_drop_collection(name)
        return "would drop"
    context().fence()
    real = real_database(db)
    # Checked, then dropped, with no write in between: the collection first refuses every write
    # (a validator nothing passes; collMod waits for writes under way), so a record cannot land
    # after the check and be dropped with it. Kept, it gets its own validation back.
    own = _validation(info.get("options", {}))
    real.command("collMod", name, **{**_OPEN, "validator": CLOSED_VALIDATOR})
    try:
        left = real[name].find_one({}, {"_id": 1})
    except BaseException:
        real.command("collMod", name, **own)
        raise
    if left is not None:
        real.command("collMod", name, **own)
        _say(f"kept collection {name}: a record was written meanwhile")
        return "kept"
    real.drop_collection(name)
    _say(what)
    return "dropped"


@_through_failovers
def ensure_validator(
    db: AnyDatabase, name: str, validator: dict[str, Any], *, level: str, action: str
) -> str:
    """Give collection ``name`` this validator, level and action (``collMod`` if they differ).

    Existing documents are not re-checked by the server; ``count_invalid`` tells how many fail.
    """
    db = _view(db)
    real = real_database(db)
    info = collection_info(db, name)
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
    if isinstance(db, ReadOnlyDatabase):
        context().plan(what)
        db.plan_options(name, validator=validator, validationLevel=level, validationAction=action)
        return "would change"
    context().fence()
    real.command("collMod", name, validator=validator, validationLevel=level, validationAction=action)
    _say(what)
    return "changed"


@_through_failovers
def remove_validator(db: AnyDatabase, name: str) -> str:
    """Drop collection ``name``'s validator (``collMod`` with an empty one)."""
    db = _view(db)
    real = real_database(db)
    info = collection_info(db, name)
    if info is None or not info.get("options", {}).get("validator"):
        return "unchanged"
    if isinstance(db, ReadOnlyDatabase):
        context().plan(f"collMod {name}: remove the validator")
        db.plan_options(name, validator={}, validationLevel="strict", validationAction="error")
        return "would change"
    context().fence()
    real.command("collMod", name, validator={}, validationLevel="strict", validationAction="error")
    _say(f"collMod {name}: validator removed")
    return "changed"


@_through_failovers
def count_invalid(db: AnyDatabase, name: str, validator: dict[str, Any]) -> int:
    """How many existing documents fail ``validator`` (the server does not re-check them); in a
    dry run, how many would once the planned data updates ran."""
    return _count(_view(db), name, {"$nor": [validator]})


def _normalized_key(index: dict[str, Any]) -> list[tuple[str, int | str]]:
    # 1 / -1 (1.0 from some servers); "text", "hashed", "2dsphere" stay as they are.
    return [(str(field), _direction(direction)) for field, direction in index["key"]]


#: A TTL field's value the monitor never deletes by: present, but neither a date nor null.
NOT_A_DATE: dict[str, Any] = {"$exists": True, "$not": {"$type": ["date", "null"]}}


@_through_failovers
def ttl_warnings(db: AnyDatabase, name: str, field: str, now: dt.datetime | None = None) -> dict[str, int]:
    """Counts to look at before a TTL goes on ``field``: values that are not dates (they never
    expire: a string date is not a date) and dates already past (deleted in a burst at the
    monitor's next pass). Reported through the run context as warnings."""
    db = _view(db)
    now = now or utc_now()
    counts = {
        "not_a_date": _count(db, name, {field: NOT_A_DATE}),
        "already_expired": _count(db, name, {field: {"$lte": now}}),
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


@_through_failovers
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
    db = _view(db)
    real = real_database(db)
    ctx = context()
    if allow_rebuild is None:
        allow_rebuild = bool(ctx.option("allow_index_rebuild", False))
    collection = real[name]
    indexes = index_information(db, name)
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
        if isinstance(db, ReadOnlyDatabase):
            ctx.plan(what)
            db.plan_index(name, spec)
            return "would create"
        context().fence()
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
    if isinstance(db, ReadOnlyDatabase):
        context().plan(what)
        db.plan_ttl(name, spec.name, int(ttl or 0))
        return "would change"
    context().fence()
    real.command("collMod", name, index={"name": spec.name, "expireAfterSeconds": ttl})
    _say(what)
    return "changed"


def _rebuild(db: AnyDatabase, name: str, spec: IndexSpec) -> str:
    real = real_database(db)
    what = f"rebuild index {spec.name} on {name}: drop, then create {spec.create_options()}"
    if isinstance(db, ReadOnlyDatabase):
        context().plan(what)
        db.plan_index(name, spec, drop=spec.name)
        return "would rebuild"
    context().fence()
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
    db = _view(db)
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
    """What a batched data step did: records changed, records it could not convert (and the
    ``_id`` of the first ``LISTED_IDS`` of those)."""

    modified: int
    unconvertible: int
    unconvertible_ids: tuple[Any, ...] = ()


# ---------------------------------------------------------------------------------------------
# Legacy date strings: one grammar, read the same way on the server (the migration's pipeline),
# in Python (``parse_legacy_date``, the model the tests hold the pipeline to) and by the query
# module (``userfiles_db.records``, which reads the strings still in the collection).
#
# ISO 8601 only, nothing guessed: a date (2026-11-12 or 20261112), optionally a time after "T",
# "t" or a space (10, 10:30, 10:30:00, 10:30:00.123456 or ,123456; basic 1030, 103000.5),
# optionally an offset (Z or z, +02:00, +0200, +02; -05:00), ASCII blanks around. A string with
# an offset means that instant; a naive one is a wall time in the legacy timezone. A wall time a
# DST change skips is read with the offset in force before the change (Python's ``fold=0``); one
# it shows twice, as the later instant (the offset after the change, as MongoDB's own
# $dateFromString and the query module read it). Digits beyond the millisecond are dropped (a
# BSON date's precision). The result must be an instant PyMongo can decode: years 1 to 9999 in
# UTC. Anything else ("11/12/2026", "yesterday", "0000-01-01T00:00:00", a month 13) is left as
# it is, counted and listed.

_BLANK = r"[ \t\n\r\f\x0b]*"
LEGACY_DATE_PATTERN = (
    rf"^{_BLANK}([0-9]{{4}})(-?)([0-9]{{2}})\2([0-9]{{2}})"
    r"(?:[Tt ]([0-9]{2})(?::?([0-9]{2})(?::?([0-9]{2})(?:[.,]([0-9]+))?)?)?"
    rf"{_BLANK}([Zz]|[+-][0-9]{{2}}(?::?[0-9]{{2}})?)?)?{_BLANK}"
    r"(?![\s\S])"  # the end of the text ("$" would also match before a final newline)
)
_LEGACY_DATE = re.compile(LEGACY_DATE_PATTERN)
UTC = dt.timezone.utc
#: The instants PyMongo can decode into a ``datetime``.
EARLIEST = dt.datetime(1, 1, 1, tzinfo=UTC)
LATEST = dt.datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
_DAY_MS = 86_400_000


def _fixed_offset(text: str) -> dt.timedelta | None:
    """The offset an ISO suffix names (``Z``, ``+02:00``, ``-0500``, ``+02``); None if invalid."""
    if text in ("Z", "z"):
        return dt.timedelta(0)
    hours, minutes = int(text[1:3]), int(text[-2:]) if len(text) > 3 else 0
    if hours > 23 or minutes > 59:
        return None
    offset = dt.timedelta(hours=hours, minutes=minutes)
    return -offset if text[0] == "-" else offset


def _local(wall: dt.datetime, zone: dt.tzinfo) -> dt.datetime:
    """The instant whose wall time in ``zone`` is ``wall``: a skipped wall time with the offset
    before the change (fold=0), a repeated one as the later instant (fold=1)."""
    first, second = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    skipped = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall
    return first if skipped else second


def parse_legacy_date(text: str, zone: dt.tzinfo) -> dt.datetime | None:
    """The instant a legacy date string names, as aware UTC at BSON precision (milliseconds), or
    ``None`` when it is not in the grammar above or names no decodable instant. Naive strings
    are wall times in ``zone`` (DST: see above).

    This is exactly what the conversion pipeline does on the server, in Python."""
    match = _LEGACY_DATE.match(text)
    if match is None:
        return None
    year, _, month, day, hour, minute, second, fraction, suffix = match.groups()
    try:
        wall = dt.datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "")[:3].ljust(3, "0")) * 1000,
        )  # fmt: skip
    except ValueError:  # year 0, month 13, February 30, hour 24, ...
        return None
    offset = _fixed_offset(suffix) if suffix else None
    if suffix and offset is None:
        return None
    try:
        if offset is not None:
            return wall.replace(tzinfo=dt.timezone(offset)).astimezone(UTC)
        return _local(wall, zone).astimezone(UTC)
    except OverflowError:  # before year 1 or after 9999 once in UTC
        return None


# The legacy writer's spelling (datetime.isoformat() of a naive time), for the server's own
# parser; "\\z" is the very end (PCRE, server side only). Its result is kept only after the
# epoch: before 1970 that parser rounds sub-millisecond digits towards 1970 (up to the epoch
# itself) instead of truncating them.
_WRITER_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?\z"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)


def _is_utc(timezone: str) -> bool:
    return timezone.upper() in ("UTC", "ETC/UTC", "Z")


def _int(capture: Any, default: int = 0) -> dict[str, Any]:
    return {"$toInt": {"$ifNull": [capture, str(default)]}}


def _local_to_utc(wall: Any, timezone: str) -> Any:
    """Server expression: the instant whose wall time in ``timezone`` is ``wall`` (a date holding
    the wall time as if it were UTC); ``fold=0`` for DST-ambiguous and skipped wall times."""
    if _is_utc(timezone):
        return wall

    def clamp(date: Any) -> Any:
        # Probes stay within years 1..9999 wherever they land, or $dateFromParts refuses them.
        low, high = EARLIEST + dt.timedelta(days=1), LATEST - dt.timedelta(days=1)
        return {"$max": [{"$min": [date, high]}, low]}

    def offset(date: Any) -> Any:
        # timezone's UTC offset (ms) at instant `date`: its wall time there, read as UTC, minus it.
        parts = {"$dateToParts": {"date": clamp(date), "timezone": timezone}}
        return {
            "$let": {
                "vars": {"p": parts},
                "in": {
                    "$subtract": [
                        {
                            "$dateFromParts": {
                                key: f"$$p.{key}"
                                for key in ("year", "month", "day", "hour", "minute", "second", "millisecond")
                            }
                        },
                        clamp(date),
                    ]
                },
            }
        }

    # The offsets a day before and a day after (equal unless a DST change is near). The later
    # one if it gives back this wall time (also when both do: a repeated wall time, the later
    # instant); otherwise the earlier one (also when neither does: a skipped wall time, fold=0).
    return {
        "$let": {
            "vars": {
                "early": offset({"$subtract": [wall, _DAY_MS]}),
                "late": offset({"$add": [wall, _DAY_MS]}),
            },
            "in": {
                "$let": {
                    "vars": {"at_late": {"$subtract": [wall, "$$late"]}},
                    "in": {
                        "$cond": [
                            {"$eq": [offset("$$at_late"), "$$late"]},
                            "$$at_late",
                            {"$subtract": [wall, "$$early"]},
                        ]
                    },
                }
            },
        }
    }


def legacy_date_expression(value: Any, timezone: str) -> dict[str, Any]:
    """Server expression: ``value`` converted to a date when it is a legacy date string that
    ``parse_legacy_date`` reads; any other value (another string, null, a date, a number, a
    missing field) unchanged. Never an error, never an undecodable date."""
    c = [{"$arrayElemAt": ["$$m.captures", i]} for i in range(9)]
    year, month, day, hour, minute, second = (_int(c[i]) for i in (0, 2, 3, 4, 5, 6))
    millisecond = {"$toInt": {"$substrCP": [{"$concat": [{"$ifNull": [c[7], ""]}, "000"]}, 0, 3]}}
    suffix = c[8]
    sign = {"$cond": [{"$eq": [{"$substrCP": [suffix, 0, 1]}, "-"]}, -1, 1]}
    suffix_hours = {"$toInt": {"$substrCP": [suffix, 1, 2]}}
    suffix_minutes = {
        "$cond": [
            {"$gt": [{"$strLenCP": suffix}, 3]},
            {"$toInt": {"$substrCP": [suffix, {"$subtract": [{"$strLenCP": suffix}, 2]}, 2]}},
            0,
        ]
    }
    fields_valid = {
        "$and": [
            {"$gte": ["$$year", 1]},
            {"$gte": ["$$month", 1]}, {"$lte": ["$$month", 12]},
            {"$gte": ["$$day", 1]}, {"$lte": ["$$day", 31]},
            {"$lte": ["$$hour", 23]}, {"$lte": ["$$minute", 59]}, {"$lte": ["$$second", 59]},
        ]
    }  # fmt: skip
    wall = {
        "$dateFromParts": {
            "year": "$$year", "month": "$$month", "day": "$$day", "hour": "$$hour",
            "minute": "$$minute", "second": "$$second", "millisecond": millisecond,
        }
    }  # fmt: skip
    # February 30 and the like: $dateFromParts carries over into the next month; refuse instead.
    wall_exists = {
        "$and": [
            {"$eq": [{"$month": "$$wall"}, "$$month"]},
            {"$eq": [{"$dayOfMonth": "$$wall"}, "$$day"]},
        ]
    }
    suffix_valid = {
        "$or": [
            {"$eq": [suffix, None]},
            {"$in": [suffix, ["Z", "z"]]},
            {"$and": [{"$lte": [suffix_hours, 23]}, {"$lte": [suffix_minutes, 59]}]},
        ]
    }
    instant = {
        "$cond": [
            {"$eq": [suffix, None]},
            _local_to_utc("$$wall", timezone),
            {
                "$cond": [
                    {"$in": [suffix, ["Z", "z"]]},
                    "$$wall",
                    {
                        "$subtract": [
                            "$$wall",
                            {
                                "$multiply": [
                                    sign,
                                    {"$add": [{"$multiply": [suffix_hours, 3_600_000]},
                                              {"$multiply": [suffix_minutes, 60_000]}]},
                                ]
                            },
                        ]
                    },
                ]
            },
        ]
    }  # fmt: skip
    decodable = {"$and": [{"$gte": ["$$instant", EARLIEST]}, {"$lte": ["$$instant", LATEST]}]}
    converted = {
        "$let": {
            "vars": {
                "year": year,
                "month": month,
                "day": day,
                "hour": hour,
                "minute": minute,
                "second": second,
            },
            "in": {
                "$cond": [
                    {"$and": [fields_valid, suffix_valid]},
                    {
                        "$let": {
                            "vars": {"wall": wall},
                            "in": {
                                "$cond": [
                                    wall_exists,
                                    {
                                        "$let": {
                                            "vars": {"instant": instant},
                                            "in": {"$cond": [decodable, "$$instant", value]},
                                        }
                                    },
                                    value,
                                ]
                            },
                        }
                    },
                    value,
                ]
            },
        }
    }
    match = {"$regexFind": {"input": value, "regex": LEGACY_DATE_PATTERN}}
    parsed: dict[str, Any] = {
        "$let": {"vars": {"m": match}, "in": {"$cond": [{"$eq": ["$$m", None]}, value, converted]}}
    }
    if _is_utc(timezone):
        # The bot's own spelling (naive isoformat, UTC) takes a shortcut, much cheaper: the
        # server's parser reads that shape as the model does from 1970 on (milliseconds
        # truncated, impossible fields refused), and no DST can make it ambiguous.
        quick = {
            "$cond": [
                {"$regexMatch": {"input": value, "regex": _WRITER_PATTERN}},
                {"$dateFromString": {"dateString": value, "timezone": "UTC", "onError": None}},
                None,
            ]
        }
        parsed = {
            "$let": {
                "vars": {"quick": quick},
                "in": {"$cond": [{"$gt": ["$$quick", _EPOCH]}, "$$quick", parsed]},
            }
        }
    return {"$cond": [{"$eq": [{"$type": value}, "string"]}, parsed, value]}


def _date_from(expression: Any, timezone: str) -> dict[str, Any]:
    # A legacy date string becomes a date; anything else stays as it is.
    return legacy_date_expression(expression, timezone)


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


#: How long one batch keeps retrying through a failover (no primary, a restart) before the step fails.
BATCH_RETRY_SECONDS = 60.0
#: How many ``_id`` of unconvertible records a conversion keeps and reports (all are counted).
LISTED_IDS = 1000
_SHOWN_IDS = 20
# _ids are read back and sent again as they are: dates outside PyMongo's range stay DatetimeMS.
_ID_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    datetime_conversion=DatetimeConversion.DATETIME_AUTO, tz_aware=True
)


def _same_value(a: Any, b: Any) -> bool:
    # BSON equality, type included (NaN equals itself, 1 is not "1").
    return bson.encode({"v": a}, codec_options=_ID_CODEC) == bson.encode({"v": b}, codec_options=_ID_CODEC)


def _next_ids(collection: Collection[Any], after: list[Any], size: int) -> list[Any]:
    """The next ``size`` ``_id`` in index order after ``after[0]`` (from the start if empty).

    ``min()`` bounds the index scan by key, across BSON types: a ``$gt`` filter would stay
    within the type of its bound (type bracketing) and skip every string, int or UUID ``_id``
    after an ObjectId one."""
    cursor = collection.find({}, {"_id": 1}, sort=[("_id", 1)]).hint([("_id", 1)])
    if not after:
        return [d["_id"] for d in cursor.limit(size)]
    if _same_value(after[0], MaxKey()):  # the last key there can be
        return []
    ids = [d["_id"] for d in cursor.min([("_id", after[0])]).limit(size + 1)]
    if ids and _same_value(ids[0], after[0]):  # min() is inclusive
        ids = ids[1:]
    if not ids:
        # A scan bounded by min() stops before the key MaxKey (its upper bound is exclusive).
        ids = [d["_id"] for d in collection.find({"_id": MaxKey()}, {"_id": 1})]
    return ids[:size]


# _id types whose $gte/$lte range holds exactly the keys between its bounds in the index (no other
# type in between, no NaN): a batch of them is addressed by its first and last _id.
_RANGE_TYPES = (ObjectId, str, dt.datetime)


def _batch_filter(ids: list[Any]) -> dict[str, Any]:
    """A filter for the records of one batch: a range when its ids are all ObjectIds (or all
    strings, or all dates), the cheapest to run; otherwise the exact list of its ids. A record
    inserted into the range meanwhile is included: harmless, the update is idempotent."""
    first, last = ids[0], ids[-1]
    kind = type(first)
    if kind in _RANGE_TYPES and type(last) is kind:
        return {"_id": {"$gte": first, "$lte": last}}
    return {"_id": {"$in": ids}}


def batched_update(
    db: AnyDatabase,
    name: str,
    selector: dict[str, Any],
    pipeline: list[dict[str, Any]],
    *,
    label: str,
    batch_size: int | None = None,
    unconvertible: dict[str, Any] | None = None,
    retry_seconds: float = BATCH_RETRY_SECONDS,
) -> Conversion:
    """Apply ``pipeline`` on the server to the records matching ``selector``, ``batch_size``
    records at a time in ``_id`` order, whatever the type of their ``_id`` (one ``update_many``
    per batch: no document leaves the server). ``selector`` must stop matching a record once it
    is updated: then a batch can be sent again, and a run that was killed midway simply
    continues where it stopped. Each batch is retried on transient errors (a failover, no
    primary yet) for up to ``retry_seconds``. Records still matching ``unconvertible`` afterwards
    are counted and the first ``LISTED_IDS`` of their ``_id`` kept. Progress goes to the run
    context.

    Raises ``MigrationError`` when the server refuses an update, ``RetryTimeout`` (a
    ``MigrationError``) when the failover outlasts ``retry_seconds``.
    """
    ctx = context()
    db = _view(db)
    real = real_database(db)[name].with_options(codec_options=_ID_CODEC)
    size = batch_size if batch_size is not None else ctx.option("batch_size", 5000)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise MigrationError(f"batch_size must be an integer of at least 1, got {size!r}")

    def retried(operation: Callable[[], T], what: str) -> T:
        return retry_transient(operation, timeout=retry_seconds, what=f"{label} on {name}: {what}")

    if isinstance(db, ReadOnlyDatabase):
        # Counted on the state the earlier planned steps would leave; then planned in turn.
        pending = retried(partial(db.count, name, selector), "counting records")
        ctx.plan(f"{label}: update {pending} record(s) of {name} on the server, in _id batches of {size}")
        db.plan_update(name, selector, pipeline)
        if unconvertible is not None and pending:
            left = retried(partial(db.count, name, unconvertible), "counting unconvertible records")
            if left:
                _say(
                    f"warning: {left} record(s) of {name} would keep dates that cannot be "
                    "converted (not ISO 8601 date strings, or outside the years 1 to 9999)"
                )
        return Conversion(0, 0)
    total = retried(real.estimated_document_count, "counting records")
    scanned = modified = left = 0
    listed: list[Any] = []
    after: list[Any] = []
    while True:
        ids = retried(partial(_next_ids, real, after, size), "reading the next batch of _id")
        if not ids:
            break
        batch = _batch_filter(ids)
        ctx.fence()  # a runner that lost its lease stops here, before writing again
        try:
            result = retried(
                partial(real.update_many, {"$and": [batch, selector]}, pipeline, hint="_id_"),
                f"updating {len(ids)} record(s) from _id {ids[0]!r}",
            )
        except OperationFailure as exc:
            raise MigrationError(f"{label} on {name} failed: {exc.details or exc}") from exc
        modified += result.modified_count
        if unconvertible is not None:
            found = retried(
                partial(_ids_of, real, {"$and": [batch, unconvertible]}), "listing unconvertible records"
            )
            left += len(found)
            listed.extend(found[: max(0, LISTED_IDS - len(listed))])
        scanned += len(ids)
        ctx.progress(label, scanned, max(total, scanned))
        after = [ids[-1]]
    _say(f"{label}: {modified} record(s) of {name} updated")
    if left:
        _say(
            f"warning: {left} record(s) of {name} have dates that could not be converted; left as "
            "they were (not ISO 8601 date strings, or outside the years 1 to 9999)"
        )
        shown = ", ".join(repr(i) for i in listed[:_SHOWN_IDS])
        more = f" and {left - _SHOWN_IDS} more" if left > _SHOWN_IDS else ""
        _say(f"  their _id: {shown}{more}")
    return Conversion(modified, left, tuple(listed))


def _ids_of(collection: Collection[Any], query: dict[str, Any]) -> list[Any]:
    return [d["_id"] for d in collection.find(query, {"_id": 1}, sort=[("_id", 1)]).hint([("_id", 1)])]


def convert_legacy_records(
    db: AnyDatabase,
    name: str,
    *,
    timezone: str | None = None,
    batch_size: int | None = None,
    retry_seconds: float = BATCH_RETRY_SECONDS,
) -> Conversion:
    """Adopt the bot's legacy records in place: date strings to dates (see ``parse_legacy_date``:
    strings with an offset or ``Z`` at that instant, naive ones read in ``timezone``, option
    ``legacy_timezone``, default UTC), ``uploaded_at`` to ``created_at``, ``file_size`` to
    ``size``. Values that are not ISO 8601 date strings, or name no instant PyMongo can decode,
    are left untouched, counted and listed. No record is deleted. Resumable; each batch is
    retried through a failover for up to ``retry_seconds``."""
    tz = timezone or str(context().option("legacy_timezone", "UTC"))
    return batched_update(
        db,
        name,
        LEGACY_RECORDS,
        legacy_to_canonical(tz),
        label="convert legacy records",
        batch_size=batch_size,
        unconvertible=UNCONVERTIBLE,
        retry_seconds=retry_seconds,
    )


def revert_to_legacy_records(
    db: AnyDatabase,
    name: str,
    *,
    timezone: str | None = None,
    batch_size: int | None = None,
    retry_seconds: float = BATCH_RETRY_SECONDS,
) -> Conversion:
    """The inverse of ``convert_legacy_records`` (for ``down``): dates back to naive ISO strings
    in ``timezone``, ``created_at`` to ``uploaded_at``, ``size`` to ``file_size``."""
    tz = timezone or str(context().option("legacy_timezone", "UTC"))
    return batched_update(
        db, name, CANONICAL_RECORDS, canonical_to_legacy(tz), label="revert to legacy records",
        batch_size=batch_size, retry_seconds=retry_seconds,
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
