"""Loading the declared schema (``schema/*.yaml``) and checking documents against it in Python.

The YAML files are the single source of truth: the server gets their ``$jsonSchema`` validator as
it is, and ``save_user_file`` checks a record against the same ``$jsonSchema`` before it writes, so
the client refuses exactly what the server would refuse. Nothing here talks to a server.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from bson import Decimal128, Int64, ObjectId

from userfiles_db.errors import SchemaError

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

SCHEMA_PACKAGE = "userfiles_db.schemas"
_FILE_NAME = re.compile(r"^(?P<collection>[A-Za-z0-9_]+)\.v(?P<version>[1-9][0-9]*)\.yaml$")
_TOP_KEYS = {
    "collection",
    "version",
    "validator",
    "validation_level",
    "validation_action",
    "indexes",
}
_INDEX_KEYS = {"name", "keys", "unique", "expire_after_seconds"}
# The $jsonSchema keywords this checker implements; a schema using any other is refused at load
# time, so a rule can never be enforced by the server and silently ignored by the client.
_KEYWORDS = {
    "bsonType", "required", "properties", "minLength", "maxLength", "minimum", "maximum",
    "enum", "title", "description", "additionalProperties",
}  # fmt: skip
_BSON_TYPES = {
    "string", "int", "long", "double", "decimal", "bool", "date", "null", "object", "array",
    "objectId", "number",
}  # fmt: skip
_NUMERIC = {"int", "long", "double", "decimal"}
_INT32 = 2**31
_INT64 = 2**63


@dataclass(frozen=True)
class IndexSpec:
    """One declared index. ``expire_after_seconds`` makes it a TTL index."""

    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False
    expire_after_seconds: int | None = None

    def create_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Collection.create_index`` (besides the keys)."""
        options: dict[str, Any] = {"name": self.name}
        if self.unique:
            options["unique"] = True
        if self.expire_after_seconds is not None:
            options["expireAfterSeconds"] = self.expire_after_seconds
        return options


@dataclass(frozen=True)
class CollectionSchema:
    """One published version of a collection's declared state."""

    collection: str
    version: int
    validator: dict[str, Any]
    validation_level: str
    validation_action: str
    indexes: tuple[IndexSpec, ...]

    @property
    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = self.validator["$jsonSchema"]
        return schema

    def index(self, name: str) -> IndexSpec:
        """The declared index called ``name``; raises ``KeyError`` if there is none."""
        for spec in self.indexes:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def problems(self, document: Mapping[str, Any]) -> list[str]:
        """Every way ``document`` breaks the ``$jsonSchema`` validator, each naming the field.

        ``document`` is taken as PyMongo would encode it: a Python int is BSON int when it fits
        in 32 bits and long otherwise, a ``datetime`` is a date.
        """
        return _check(self.json_schema, document, "")


def bson_type(value: object) -> str | None:
    """The BSON type alias PyMongo encodes ``value`` as (``None`` if not one the checker knows)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Int64):
        return "long"
    if isinstance(value, int):
        if -_INT32 <= value < _INT32:
            return "int"
        return "long" if -_INT64 <= value < _INT64 else None
    if isinstance(value, float):
        return "double"
    if isinstance(value, (Decimal128, Decimal)):
        return "decimal"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dt.datetime):
        return "date"
    if isinstance(value, ObjectId):
        return "objectId"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return None


def _type_label(value: object) -> str:
    return bson_type(value) or type(value).__name__


def _allowed_types(rule: Mapping[str, Any]) -> set[str] | None:
    if "bsonType" not in rule:
        return None
    declared = rule["bsonType"]
    names = {declared} if isinstance(declared, str) else set(declared)
    if "number" in names:
        names |= _NUMERIC
    return names


def _check(rule: Mapping[str, Any], value: object, path: str) -> list[str]:
    where = path or "document"
    allowed = _allowed_types(rule)
    kind = bson_type(value)
    if allowed is not None and kind not in allowed:
        wanted = " or ".join(sorted(t for t in allowed if t != "number" or len(allowed) == 1))
        return [f"{where}: must be of type {wanted}, got {_type_label(value)} {value!r}"]
    problems: list[str] = []
    if "enum" in rule and value not in rule["enum"]:
        problems.append(f"{where}: must be one of {rule['enum']!r}, got {value!r}")
    if isinstance(value, str):
        if len(value) < rule.get("minLength", 0):
            problems.append(f"{where}: must be at least {rule['minLength']} character(s) long, got {value!r}")
        if "maxLength" in rule and len(value) > rule["maxLength"]:
            problems.append(f"{where}: must be at most {rule['maxLength']} characters long")
    if kind in _NUMERIC:
        if "minimum" in rule and value < rule["minimum"]:
            problems.append(f"{where}: must be at least {rule['minimum']}, got {value!r}")
        if "maximum" in rule and value > rule["maximum"]:
            problems.append(f"{where}: must be at most {rule['maximum']}, got {value!r}")
    if isinstance(value, Mapping):
        prefix = f"{path}." if path else ""
        for name in rule.get("required", ()):
            if name not in value:
                problems.append(f"{prefix}{name}: required field is missing")
        properties: Mapping[str, Any] = rule.get("properties", {})
        for name, sub_rule in properties.items():
            if name in value:
                problems.extend(_check(sub_rule, value[name], f"{prefix}{name}"))
        if rule.get("additionalProperties") is False:
            for name in value:
                if name not in properties:
                    problems.append(f"{prefix}{name}: field is not allowed")
    return problems


def _validate_rule(rule: object, where: str) -> None:
    if not isinstance(rule, Mapping):
        raise SchemaError(f"{where}: a $jsonSchema rule must be a mapping, got {rule!r}")
    unknown = set(rule) - _KEYWORDS
    if unknown:
        raise SchemaError(f"{where}: unsupported $jsonSchema keyword(s) {sorted(unknown)}")
    types = _allowed_types(rule) or set()
    if types - _BSON_TYPES:
        raise SchemaError(f"{where}: unknown bsonType(s) {sorted(types - _BSON_TYPES)}")
    for name, sub_rule in rule.get("properties", {}).items():
        _validate_rule(sub_rule, f"{where}.properties.{name}")


def _parse_index(raw: object, where: str) -> IndexSpec:
    if not isinstance(raw, Mapping) or set(raw) - _INDEX_KEYS or "name" not in raw:
        raise SchemaError(
            f"{where}: an index needs 'name' and 'keys' (and optionally "
            f"'unique', 'expire_after_seconds'), got {raw!r}"
        )
    keys = raw.get("keys")
    if (
        not isinstance(keys, list)
        or not keys
        or not all(
            isinstance(k, list) and len(k) == 2 and isinstance(k[0], str) and k[1] in (1, -1) for k in keys
        )
    ):
        raise SchemaError(f"{where}: 'keys' must be a list of [field, 1 or -1] pairs, got {keys!r}")
    ttl = raw.get("expire_after_seconds")
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 2147483647):
        raise SchemaError(f"{where}: 'expire_after_seconds' must be an integer 0..2147483647")
    if ttl is not None and len(keys) != 1:
        raise SchemaError(f"{where}: a TTL index must have exactly one key (compound ones ignore TTL)")
    return IndexSpec(
        name=str(raw["name"]),
        keys=tuple((str(k[0]), int(k[1])) for k in keys),
        unique=bool(raw.get("unique", False)),
        expire_after_seconds=ttl,
    )


def parse_schema(raw: object, source: str) -> CollectionSchema:
    """Build a ``CollectionSchema`` from the parsed YAML of ``source``; raises ``SchemaError``."""
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{source}: expected a mapping at the top level")
    unknown = set(raw) - _TOP_KEYS
    missing = {"collection", "version", "validator", "indexes"} - set(raw)
    if unknown or missing:
        raise SchemaError(f"{source}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    validator = raw["validator"]
    if not isinstance(validator, Mapping) or set(validator) != {"$jsonSchema"}:
        raise SchemaError(f"{source}: 'validator' must hold exactly one key, $jsonSchema")
    _validate_rule(validator["$jsonSchema"], f"{source}: $jsonSchema")
    level = raw.get("validation_level", "strict")
    action = raw.get("validation_action", "error")
    if level not in ("strict", "moderate", "off") or action not in ("error", "warn"):
        raise SchemaError(f"{source}: bad validation_level {level!r} or validation_action {action!r}")
    indexes = raw["indexes"]
    if not isinstance(indexes, list):
        raise SchemaError(f"{source}: 'indexes' must be a list")
    specs = tuple(_parse_index(ix, f"{source}: indexes[{i}]") for i, ix in enumerate(indexes))
    if len({s.name for s in specs}) != len(specs):
        raise SchemaError(f"{source}: index names must be unique")
    return CollectionSchema(
        collection=str(raw["collection"]),
        version=int(raw["version"]),
        validator=dict(validator),
        validation_level=level,
        validation_action=action,
        indexes=specs,
    )


def package_data(package: str, folder: str) -> Traversable:
    """The files of a data package that setuptools maps from a top-level folder of the repository
    (``userfiles_db.schemas`` from ``schema/``, ``userfiles_db.bundled_migrations`` from
    ``migrations/``).

    Run from a clone with a normal (non-editable) install, the clone's ``userfiles_db/`` shadows
    the installed package and the mapped packages are not importable; the clone's own folders
    next to the package hold the same files then. Raises ``ModuleNotFoundError`` if neither exists.
    """
    try:
        return resources.files(package)
    except ModuleNotFoundError:
        beside = Path(__file__).resolve().parent.parent / folder
        if (beside / "__init__.py").is_file():
            return beside
        raise


def available_versions(collection: str = "user_files") -> list[int]:
    """The published schema versions of ``collection``, oldest first."""
    versions = []
    for entry in package_data(SCHEMA_PACKAGE, "schema").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match and match["collection"] == collection:
            versions.append(int(match["version"]))
    return sorted(versions)


@cache
def load_schema(collection: str = "user_files", version: int | None = None) -> CollectionSchema:
    """The declared schema of ``collection`` at ``version`` (default: the newest).

    Migrations pass an explicit version so they keep meaning what they meant when written.
    Raises ``SchemaError`` if the version does not exist or its file is malformed.
    """
    versions = available_versions(collection)
    if not versions:
        raise SchemaError(f"no schema files for collection {collection!r} in {SCHEMA_PACKAGE}")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise SchemaError(f"{collection} has no schema version {chosen}; published: {versions}")
    name = f"{collection}.v{chosen}.yaml"
    try:
        raw = yaml.safe_load(package_data(SCHEMA_PACKAGE, "schema").joinpath(name).read_text("utf-8"))
    except yaml.YAMLError as exc:
        raise SchemaError(f"{name}: not valid YAML: {exc}") from None
    schema = parse_schema(raw, name)
    if schema.collection != collection or schema.version != chosen:
        raise SchemaError(f"{name}: declares {schema.collection} v{schema.version}")
    return schema
