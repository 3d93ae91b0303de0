"""Loading the declared schema (``schema/*.yaml``) and checking documents against it in Python.

The YAML files are the single source of truth: the server gets their ``$jsonSchema`` validator as
it is, and ``save_user_file`` checks a record against the same ``$jsonSchema`` before it writes, so
the client refuses exactly what the server would refuse. Nothing here talks to a server.
"""

from __future__ import annotations

import datetime as dt
import math
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
from userfiles_db.safe_yaml import strict_yaml

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

SCHEMA_PACKAGE = "userfiles_db.schemas"
# NAME.vN.yaml: a collection name (letters, digits, _ . -; not system.*) and a version from 1.
_FILE_NAME = re.compile(r"^(?P<collection>[A-Za-z0-9_][A-Za-z0-9_.\-]*?)\.v(?P<version>[1-9][0-9]*)\.yaml$")
_YAML_SUFFIXES = (".yaml", ".yml")
_TOP_KEYS = {
    "collection",
    "version",
    "validator",
    "validation_level",
    "validation_action",
    "indexes",
    "options",
}
_OPTION_KEYS = {"collation", "capped", "clustered", "expire_after_seconds"}
# Collation fields and the values MongoDB accepts for each (locale is required).
_COLLATION: dict[str, tuple[type, tuple[Any, ...]]] = {
    "locale": (str, ()),
    "caseLevel": (bool, ()),
    "caseFirst": (str, ("upper", "lower", "off")),
    "strength": (int, (1, 2, 3, 4, 5)),
    "numericOrdering": (bool, ()),
    "alternate": (str, ("non-ignorable", "shifted")),
    "maxVariable": (str, ("punct", "space")),
    "backwards": (bool, ()),
    "normalization": (bool, ()),
}
#: The server rounds a capped collection's size up to a multiple of this many bytes.
CAPPED_SIZE_STEP = 256
MAX_TTL_SECONDS = 2147483647
MAX_SCHEMA_BYTES = 1024 * 1024


def server_capped_size(size: int) -> int:
    """The size the server gives a capped collection created with ``size`` bytes."""
    return -(-size // CAPPED_SIZE_STEP) * CAPPED_SIZE_STEP


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
class CollectionOptions:
    """The options a collection is created with, that matter to its behaviour. MongoDB fixes
    them at creation (but a clustered collection's TTL, which ``collMod`` changes in place).

    ``collation``: the declared fields only (the server fills in the rest, e.g. ``{"locale": "en",
    "strength": 2}``). ``capped_size`` / ``capped_max``: a capped collection of that many bytes
    (rounded up to 256 by the server) and, optionally, documents. ``clustered``: clustered on
    ``_id``; ``expire_after_seconds``: its TTL on ``_id`` (clustered collections only).
    """

    collation: tuple[tuple[str, Any], ...] = ()
    capped_size: int | None = None
    capped_max: int | None = None
    clustered: bool = False
    expire_after_seconds: int | None = None

    @property
    def capped(self) -> bool:
        return self.capped_size is not None

    def create_options(self) -> dict[str, Any]:
        """Keyword arguments for ``Database.create_collection``."""
        options: dict[str, Any] = {}
        if self.collation:
            options["collation"] = dict(self.collation)
        if self.capped_size is not None:
            options["capped"] = True
            options["size"] = self.capped_size
            if self.capped_max is not None:
                options["max"] = self.capped_max
        if self.clustered:
            options["clusteredIndex"] = {"key": {"_id": 1}, "unique": True}
            if self.expire_after_seconds is not None:
                options["expireAfterSeconds"] = self.expire_after_seconds
        return options

    def to_yaml(self) -> dict[str, Any]:
        """The ``options:`` mapping of a schema file that declares these options."""
        out: dict[str, Any] = {}
        if self.collation:
            out["collation"] = dict(self.collation)
        if self.capped_size is not None:
            out["capped"] = {"size": self.capped_size}
            if self.capped_max is not None:
                out["capped"]["max"] = self.capped_max
        if self.clustered:
            out["clustered"] = True
            if self.expire_after_seconds is not None:
                out["expire_after_seconds"] = self.expire_after_seconds
        return out


@dataclass(frozen=True)
class CollectionSchema:
    """One published version of a collection's declared state. ``validator`` is ``{}`` when the
    collection declares none."""

    collection: str
    version: int
    validator: dict[str, Any]
    validation_level: str
    validation_action: str
    indexes: tuple[IndexSpec, ...]
    options: CollectionOptions = CollectionOptions()

    @property
    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = self.validator.get("$jsonSchema", {})
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


def _check_values(value: object, where: str) -> None:
    """Only what a BSON document can hold as the YAML gave it: strings, booleans, null, 64-bit
    integers, finite numbers, lists and mappings with string keys. (A YAML date, a NaN that never
    equals itself, an integer MongoDB cannot store: refused here, not at ``up``.)"""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise SchemaError(f"{where}: keys must be strings, got {key!r}")
            _check_values(item, f"{where}.{key}")
    elif isinstance(value, list):
        for n, item in enumerate(value):
            _check_values(item, f"{where}[{n}]")
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise SchemaError(f"{where}: {value} does not fit in 64 bits (MongoDB cannot store it)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(f"{where}: {value} is not a finite number")
    else:
        raise SchemaError(f"{where}: {type(value).__name__} {value!r} is not a JSON value (quote it)")


def _validate_rule(rule: object, where: str) -> None:
    if not isinstance(rule, Mapping):
        raise SchemaError(f"{where}: a $jsonSchema rule must be a mapping, got {rule!r}")
    unknown = set(rule) - _KEYWORDS
    if unknown:
        raise SchemaError(f"{where}: unsupported $jsonSchema keyword(s) {sorted(unknown)}")
    declared = rule.get("bsonType", "object")
    if not isinstance(declared, (str, list)) or (
        isinstance(declared, list) and not all(isinstance(t, str) for t in declared)
    ):
        raise SchemaError(f"{where}: bsonType must be a type name or a list of them, got {declared!r}")
    types = _allowed_types(rule) or set()
    if types - _BSON_TYPES:
        raise SchemaError(f"{where}: unknown bsonType(s) {sorted(types - _BSON_TYPES)}")
    for keyword, kind in (("properties", Mapping), ("required", list), ("enum", list)):
        if keyword in rule and not isinstance(rule[keyword], kind):
            raise SchemaError(f"{where}: {keyword} must be a {'mapping' if kind is Mapping else 'list'}")
    if not all(isinstance(n, str) for n in rule.get("required", [])):
        raise SchemaError(f"{where}: required must list field names")
    for keyword in ("minLength", "maxLength", "minimum", "maximum"):
        bound = rule.get(keyword)
        if keyword in rule and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
            raise SchemaError(f"{where}: {keyword} must be a number, got {bound!r}")
    if "additionalProperties" in rule and not isinstance(rule["additionalProperties"], bool):
        raise SchemaError(f"{where}: additionalProperties must be true or false")
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
    if not isinstance(raw["name"], str) or not raw["name"].isprintable() or raw["name"] in ("", "_id_"):
        raise SchemaError(
            f"{where}: 'name' must be a non-empty printable string other than _id_, got {raw['name']!r}"
        )
    if not isinstance(raw.get("unique", False), bool):
        raise SchemaError(f"{where}: 'unique' must be true or false, got {raw['unique']!r}")
    if ttl is not None and not _is_ttl(ttl):
        raise SchemaError(f"{where}: 'expire_after_seconds' must be an integer 0..{MAX_TTL_SECONDS}")
    if ttl is not None and len(keys) != 1:
        raise SchemaError(f"{where}: a TTL index must have exactly one key (compound ones ignore TTL)")
    if ttl is not None and keys[0][0] == "_id":
        raise SchemaError(f"{where}: _id cannot carry a TTL index (declare a clustered collection's TTL)")
    if len({k[0] for k in keys}) != len(keys):
        raise SchemaError(f"{where}: a field appears twice in 'keys' {keys!r}")
    return IndexSpec(
        name=str(raw["name"]),
        keys=tuple((str(k[0]), int(k[1])) for k in keys),
        unique=bool(raw.get("unique", False)),
        expire_after_seconds=ttl,
    )


def _is_ttl(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TTL_SECONDS


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _parse_collation(raw: object, where: str) -> tuple[tuple[str, Any], ...]:
    if not isinstance(raw, Mapping) or "locale" not in raw:
        raise SchemaError(f"{where}: 'collation' must be a mapping with at least 'locale', got {raw!r}")
    for key, value in raw.items():
        if key not in _COLLATION:
            raise SchemaError(f"{where}: unknown collation field {key!r}; known: {sorted(_COLLATION)}")
        kind, allowed = _COLLATION[key]
        if type(value) is not kind or (allowed and value not in allowed):
            wanted = f"one of {list(allowed)}" if allowed else f"a {kind.__name__}"
            raise SchemaError(f"{where}: collation {key} must be {wanted}, got {value!r}")
    if not raw["locale"]:
        raise SchemaError(f"{where}: collation locale must not be empty")
    return tuple((str(k), raw[k]) for k in sorted(raw))


def _parse_options(raw: object, where: str) -> CollectionOptions:
    if raw is None:
        return CollectionOptions()
    if not isinstance(raw, Mapping) or set(raw) - _OPTION_KEYS:
        raise SchemaError(f"{where}: 'options' is a mapping of {sorted(_OPTION_KEYS)}, got {raw!r}")
    collation = _parse_collation(raw["collation"], where) if "collation" in raw else ()
    if dict(collation).get("locale") == "simple":  # binary comparison: what no collation means
        if len(collation) > 1:
            raise SchemaError(f"{where}: the 'simple' collation takes no other field")
        collation = ()
    size = limit = None
    if "capped" in raw:
        capped = raw["capped"]
        shape = isinstance(capped, Mapping) and not set(capped) - {"size", "max"}
        if not shape or not _positive(capped.get("size")):
            raise SchemaError(
                f"{where}: 'capped' must be {{size: bytes > 0, max: documents > 0}}, got {capped!r}"
            )
        if "max" in capped and not _positive(capped["max"]):
            raise SchemaError(f"{where}: capped 'max' must be an integer > 0, got {capped['max']!r}")
        size, limit = int(capped["size"]), capped.get("max")
    clustered = raw.get("clustered", False)
    if not isinstance(clustered, bool):
        raise SchemaError(f"{where}: 'clustered' must be true or false, got {clustered!r}")
    ttl = raw.get("expire_after_seconds")
    if ttl is not None and not _is_ttl(ttl):
        raise SchemaError(f"{where}: 'expire_after_seconds' must be an integer 0..{MAX_TTL_SECONDS}")
    if ttl is not None and not clustered:
        raise SchemaError(
            f"{where}: a collection-level 'expire_after_seconds' needs 'clustered: true' "
            "(otherwise declare a TTL index)"
        )
    if clustered and size is not None:
        raise SchemaError(f"{where}: a collection cannot be both capped and clustered")
    return CollectionOptions(collation, size, limit, clustered, ttl)


def parse_schema(raw: object, source: str) -> CollectionSchema:
    """Build a ``CollectionSchema`` from the parsed YAML of ``source``; raises ``SchemaError``."""
    if not isinstance(raw, Mapping):
        raise SchemaError(f"{source}: expected a mapping at the top level")
    unknown = set(raw) - _TOP_KEYS
    missing = {"collection", "version", "indexes"} - set(raw)
    if unknown or missing:
        raise SchemaError(f"{source}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    name, version = raw["collection"], raw["version"]
    if (
        not isinstance(name, str)
        or not _FILE_NAME.match(f"{name}.v1.yaml")
        or name.startswith("system.")
        or name.endswith(".")
        or ".." in name
    ):
        raise SchemaError(f"{source}: 'collection' must be a collection name, got {name!r}")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SchemaError(f"{source}: 'version' must be an integer >= 1, got {version!r}")
    validator = raw.get("validator")
    if validator is None:  # no validator declared: the collection takes any document
        validator = {}
    elif not isinstance(validator, Mapping) or set(validator) != {"$jsonSchema"}:
        raise SchemaError(f"{source}: 'validator' must hold exactly one key, $jsonSchema")
    else:
        _check_values(validator, f"{source}: validator")
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
    if len({s.keys for s in specs}) != len(specs):  # the server refuses it (code 85)
        raise SchemaError(f"{source}: two indexes have the same keys")
    return CollectionSchema(
        collection=name,
        version=version,
        validator=dict(validator),
        validation_level=level,
        validation_action=action,
        indexes=specs,
        options=_parse_options(raw.get("options"), f"{source}: options"),
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


class SchemaSet:
    """The schema files of one directory: every declared collection, every published version.

    Each ``NAME.vN.yaml`` file is the declared state of collection NAME at version N. Any other
    ``.yaml``/``.yml`` file is an error (a misnamed version must not be silently ignored); other
    files (``__init__.py``, a README) are ignored. Files are read when loaded.
    """

    def __init__(self, root: Traversable | Path, label: str | None = None) -> None:
        self.root = root
        self.label = label or str(root)
        self._files: dict[tuple[str, int], str] = {}
        try:
            entries = sorted(root.iterdir(), key=lambda entry: entry.name)
        except OSError as exc:
            why = exc.strerror or exc
            raise SchemaError(f"schema directory {self.label!r} cannot be read: {why}") from None
        for entry in entries:
            if not entry.name.endswith(_YAML_SUFFIXES):
                continue
            match = _FILE_NAME.match(entry.name)
            if match is None or match["collection"].startswith("system."):
                raise SchemaError(
                    f"{self.label}/{entry.name}: schema files are named NAME.vN.yaml "
                    "(collection NAME, version N from 1), e.g. user_files.v2.yaml"
                )
            self._files[(match["collection"], int(match["version"]))] = entry.name

    @classmethod
    def directory(cls, path: str | Path) -> SchemaSet:
        """The schema files in ``path``; raises ``SchemaError`` when it is not a directory."""
        folder = Path(path)
        if not folder.is_dir():
            raise SchemaError(f"schema directory {str(folder)!r} does not exist")
        return cls(folder, str(folder))

    @classmethod
    def bundled(cls) -> SchemaSet:
        """The schema shipped with the package (the repository's ``schema/``)."""
        return cls(package_data(SCHEMA_PACKAGE, "schema"), SCHEMA_PACKAGE)

    def collections(self) -> list[str]:
        """The declared collections, sorted."""
        return sorted({name for name, _ in self._files})

    def versions(self, collection: str) -> list[int]:
        """The published versions of ``collection``, oldest first."""
        return sorted(version for name, version in self._files if name == collection)

    def file_name(self, collection: str, version: int) -> str:
        return self._files[(collection, version)]

    def read_text(self, collection: str, version: int) -> str:
        name = self.file_name(collection, version)
        path = self.root.joinpath(name)
        if isinstance(path, Path):  # a pipe or a device would be read forever
            if not path.is_file():
                raise SchemaError(f"{self.label}/{name}: not a regular file")
            if path.stat().st_size > MAX_SCHEMA_BYTES:
                raise SchemaError(f"{self.label}/{name}: larger than {MAX_SCHEMA_BYTES} bytes")
        try:
            return path.read_text("utf-8")
        except UnicodeDecodeError:
            raise SchemaError(f"{self.label}/{name}: not UTF-8 text") from None
        except OSError as exc:
            raise SchemaError(f"{self.label}/{name}: cannot be read: {exc.strerror or exc}") from None

    def load(self, collection: str, version: int | None = None) -> CollectionSchema:
        """The declared schema of ``collection`` at ``version`` (default: the newest). Raises
        ``SchemaError`` when the version does not exist or its file is malformed."""
        versions = self.versions(collection)
        if not versions:
            raise SchemaError(f"no schema files for collection {collection!r} in {self.label}")
        chosen = versions[-1] if version is None else version
        if chosen not in versions:
            raise SchemaError(f"{collection} has no schema version {chosen}; published: {versions}")
        name = self.file_name(collection, chosen)
        raw = load_yaml(self.read_text(collection, chosen), f"{self.label}/{name}")
        schema = parse_schema(raw, name)
        if schema.collection != collection or schema.version != chosen:
            raise SchemaError(f"{name}: declares {schema.collection} v{schema.version}")
        return schema

    def newest(self) -> dict[str, CollectionSchema]:
        """The newest declared version of every collection: the state to reach."""
        return {name: self.load(name) for name in self.collections()}


def load_yaml(text: str, source: str) -> Any:
    """Parse a schema file: safe YAML, no aliases, no key given twice; raises ``SchemaError``."""
    try:
        return strict_yaml(text)
    except yaml.YAMLError as exc:
        raise SchemaError(f"{source}: not valid YAML: {exc}") from None
    except RecursionError:
        raise SchemaError(f"{source}: not valid YAML: nested too deeply") from None


def available_versions(collection: str = "user_files") -> list[int]:
    """The published schema versions of ``collection`` in the bundled schema, oldest first."""
    return SchemaSet.bundled().versions(collection)


@cache
def load_schema(collection: str = "user_files", version: int | None = None) -> CollectionSchema:
    """The bundled declared schema of ``collection`` at ``version`` (default: the newest).

    Migrations pass an explicit version so they keep meaning what they meant when written.
    Raises ``SchemaError`` if the version does not exist or its file is malformed.
    """
    return SchemaSet.bundled().load(collection, version)
