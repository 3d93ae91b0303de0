"""The drift check: a live collection (options, validator, indexes, TTL) against its declared schema.

One normalised description serves the drift check, ``new --autogenerate`` and ``plan``: an index
is ``{"key": [[field, direction]], "unique": true, "expireAfterSeconds": n}`` plus ``"options"``
for what a schema file cannot declare (sparse, partial, another collation, text weights...).
A live collection is read from a real database or from a dry run's overlay (the state planned
steps would leave) through the same two reads, ``listCollections`` and ``index_information``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from userfiles_db.schema import CollectionOptions, CollectionSchema, IndexSpec, server_capped_size

# Index fields that describe nothing a schema compares (version, namespace, build mode).
_IGNORED_INDEX_FIELDS = frozenset({"v", "ns", "background", "key", "name", "unique", "expireAfterSeconds"})
_VALIDATION_FIELDS = frozenset({"validator", "validationLevel", "validationAction"})


@dataclass(frozen=True)
class Difference:
    """One way the live collection differs from the declared schema."""

    subject: str
    declared: Any
    live: Any

    def __str__(self) -> str:
        if (
            isinstance(self.declared, Mapping)
            and isinstance(self.live, Mapping)
            and self.subject.endswith("validator")
        ):
            paths = _differing_paths(self.declared, self.live, "")
            shown = ", ".join(paths[:4]) + (f" and {len(paths) - 4} more" if len(paths) > 4 else "")
            return f"{self.subject}: differs at {shown}"
        return f"{self.subject}: declared {self.declared!r}, live {self.live!r}"

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "declared": repr(self.declared), "live": repr(self.live)}


def _differing_paths(declared: Mapping[str, Any], live: Mapping[str, Any], path: str) -> list[str]:
    """Where two validators differ: ``$jsonSchema.properties.tag (declared only)`` and the like."""
    found = []
    for key in [*declared, *(k for k in live if k not in declared)]:
        where = f"{path}.{key}" if path else str(key)
        if key not in live:
            found.append(f"{where} (declared only)")
        elif key not in declared:
            found.append(f"{where} (live only)")
        elif isinstance(declared[key], Mapping) and isinstance(live[key], Mapping):
            found += _differing_paths(declared[key], live[key], where)
        elif declared[key] != live[key]:
            found.append(f"{where} (declared {declared[key]!r}, live {live[key]!r})")
    return found


def direction(value: Any) -> int | str:
    # 1 / -1 (the server may give 1.0); "text", "hashed", "2dsphere" stay strings.
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == int(value):
        return int(value)
    return str(value)


def describe_index(
    index: Mapping[str, Any], collection_collation: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An ``index_information()`` entry, normalised. A collation equal to the collection's
    default (which every index of a collated collection inherits) is not an option of its own."""
    described: dict[str, Any] = {"key": [[str(f), direction(d)] for f, d in index["key"]]}
    if index.get("unique"):
        described["unique"] = True
    if index.get("expireAfterSeconds") is not None:
        described["expireAfterSeconds"] = int(index["expireAfterSeconds"])
    other = {k: v for k, v in index.items() if k not in _IGNORED_INDEX_FIELDS}
    if other.get("collation") is not None and dict(other["collation"]) == dict(collection_collation or {}):
        del other["collation"]
    if other.get("sparse") is False:
        del other["sparse"]
    if other:
        described["options"] = {k: _plain(v) for k, v in sorted(other.items())}
    return described


def describe_spec(spec: IndexSpec) -> dict[str, Any]:
    """A declared index, in the shape of ``describe_index``."""
    described: dict[str, Any] = {"key": [[f, d] for f, d in spec.keys]}
    if spec.unique:
        described["unique"] = True
    if spec.expire_after_seconds is not None:
        described["expireAfterSeconds"] = spec.expire_after_seconds
    return described


def spec_of(name: str, described: Mapping[str, Any]) -> IndexSpec | None:
    """The ``IndexSpec`` that re-creates a described index, or ``None`` when a schema cannot
    declare it (options of its own, a text or hashed key)."""
    keys = described["key"]
    if described.get("options") or not all(isinstance(d, int) and d in (1, -1) for _, d in keys):
        return None
    return IndexSpec(
        name=name,
        keys=tuple((str(f), int(d)) for f, d in keys),
        unique=bool(described.get("unique", False)),
        expire_after_seconds=described.get("expireAfterSeconds"),
    )


def _plain(value: Any) -> Any:
    # SON and nested mappings as plain dicts, so descriptions compare and print alike.
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class LiveCollection:
    """A collection as a server (or a dry run's plan) has it. ``validator`` is ``{}`` when it has
    none; ``options`` are its other ``listCollections`` options (collation in full, capped
    size and max, clusteredIndex, expireAfterSeconds); ``indexes`` maps names (``_id_`` left
    out) to ``describe_index`` descriptions."""

    name: str
    exists: bool
    validator: dict[str, Any] = field(default_factory=dict)
    validation_level: str = "strict"
    validation_action: str = "error"
    options: dict[str, Any] = field(default_factory=dict)
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def spec(self, name: str) -> IndexSpec | None:
        described = self.indexes.get(name)
        return None if described is None else spec_of(name, described)


def read_collection(
    info: Mapping[str, Any] | None, index_information: Mapping[str, Any], name: str
) -> LiveCollection:
    """A ``LiveCollection`` from a ``listCollections`` entry (``None``: missing) and its indexes."""
    if info is None:
        return LiveCollection(name, exists=False)
    options = _plain(dict(info.get("options", {})))
    collation = options.get("collation")
    indexes = {
        str(index_name): describe_index(index, collation)
        for index_name, index in index_information.items()
        if index_name != "_id_"
    }
    return LiveCollection(
        name=name,
        exists=True,
        validator=dict(options.get("validator") or {}),
        validation_level=str(options.get("validationLevel", "strict")),
        validation_action=str(options.get("validationAction", "error")),
        options={k: v for k, v in options.items() if k not in _VALIDATION_FIELDS},
        indexes=dict(sorted(indexes.items())),
    )


def live_collection(db: Any, name: str) -> LiveCollection:
    """Collection ``name`` of ``db``: a real database, or a dry run's ``ReadOnlyDatabase`` (the
    state its planned steps would leave). Read-only."""
    from userfiles_db.migrate.steps import collection_info, index_information  # steps imports this module

    info = collection_info(db, name)
    return read_collection(info, index_information(db, name) if info is not None else {}, name)


def option_differences(declared: CollectionOptions, live: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(option, declared, live)`` for each collection option that differs. A declared
    collation names only some fields (the server fills in the rest); a capped size is rounded
    up by the server to a multiple of 256 bytes."""
    found: list[tuple[str, Any, Any]] = []
    want_collation = dict(declared.collation) if declared.collation else None
    have_collation = live.get("collation")
    if want_collation is None:
        if have_collation is not None:
            found.append(("collation", None, have_collation))
    elif have_collation is None or any(have_collation.get(k) != v for k, v in want_collation.items()):
        found.append(("collation", want_collation, have_collation))
    want_capped = (
        None
        if declared.capped_size is None
        else {"size": server_capped_size(declared.capped_size), "max": declared.capped_max}
    )
    have_capped = {"size": live.get("size"), "max": live.get("max")} if live.get("capped") else None
    if want_capped != have_capped:
        found.append(("capped", want_capped, have_capped))
    have_clustered = bool(live.get("clusteredIndex"))
    if declared.clustered != have_clustered:
        found.append(("clustered", declared.clustered, have_clustered))
    have_ttl = live.get("expireAfterSeconds")
    have_ttl = None if have_ttl is None else int(have_ttl)
    if declared.expire_after_seconds != have_ttl:
        found.append(("expireAfterSeconds", declared.expire_after_seconds, have_ttl))
    return found


def compare(schema: CollectionSchema, live: LiveCollection) -> list[Difference]:
    """Every difference between ``live`` and ``schema``; empty when in line."""
    name = schema.collection
    if not live.exists:
        return [Difference(f"collection {name}", "exists", "missing")]
    differences = [
        Difference(f"{name} option {option}", want, have)
        for option, want, have in option_differences(schema.options, live.options)
    ]
    for subject, want, have in (
        ("validator", schema.validator, live.validator),
        ("validationLevel", schema.validation_level, live.validation_level),
        ("validationAction", schema.validation_action, live.validation_action),
    ):
        if want != have:
            differences.append(Difference(f"{name} {subject}", want or None, have or None))
    for spec in schema.indexes:
        declared_index = describe_spec(spec)
        live_index = live.indexes.get(spec.name)
        if declared_index != live_index:
            differences.append(Difference(f"{name} index {spec.name}", declared_index, live_index))
    declared_names = {spec.name for spec in schema.indexes}
    for extra in sorted(set(live.indexes) - declared_names):
        differences.append(Difference(f"{name} index {extra}", None, live.indexes[extra]))
    return differences


def drift(db: Any, schema: CollectionSchema) -> list[Difference]:
    """Every difference between ``db[schema.collection]`` and ``schema``; empty when in line.
    Read-only."""
    return compare(schema, live_collection(db, schema.collection))
