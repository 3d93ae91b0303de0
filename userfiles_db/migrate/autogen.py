"""``new --autogenerate``: the next migration, written from the difference between the declared
schema and the state the existing migrations build.

The "before" state is found by replaying the migrations on an empty scratch database (the real
server's semantics, hand-written migrations included); the "after" state is the newest declared
version of each collection. The difference becomes calls to the idempotent steps, each paired
with the call that undoes it, so ``down`` restores the state before. What cannot be done safely
(options fixed at a collection's creation, a unique index whose keys change, an index made
unique over records that may hold duplicates) is written as a commented step with the reason
and listed in ``MANUAL``; nothing is ever dropped that holds records.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from userfiles_db.migrate.discovery import Migration, checksum
from userfiles_db.migrate.drift import LiveCollection, compare, live_collection, option_differences
from userfiles_db.migrate.engine import EngineOptions, Runner
from userfiles_db.schema import CollectionOptions, CollectionSchema, IndexSpec, SchemaSet

_LINE = 88  # what ruff format and black keep on one line by default
_INDENT = "    "


# ---------------------------------------------------------------------------------------------
# Replaying the migrations


def tool_collections(options: EngineOptions) -> set[str]:
    return {options.changelog_collection, options.lock_collection, options.history_collection}


def replay(
    scratch: Database[Any], migrations: Sequence[Migration], options: EngineOptions | None = None
) -> dict[str, LiveCollection]:
    """Apply ``migrations`` to the empty database ``scratch`` and return the state they build:
    every collection but the tool's own. Raises ``MigrationError`` when one fails there, and
    ``ValueError`` when ``scratch`` is not empty (its collections would count as built)."""
    options = options or EngineOptions()
    if scratch.list_collection_names():
        raise ValueError(f"the scratch database {scratch.name!r} is not empty")
    Runner(scratch, migrations, options).up()
    skip = tool_collections(options)
    names = [n for n in scratch.list_collection_names() if n not in skip and not n.startswith("system.")]
    return {name: live_collection(scratch, name) for name in sorted(names)}


# ---------------------------------------------------------------------------------------------
# Python literals that ruff format leaves as they are


def literal(value: Any, indent: int = 0) -> str:
    """``value`` (YAML data: mappings, lists, strings, numbers, booleans, null) as a Python
    literal, laid out the way ruff format and black lay it out."""
    pad = _INDENT * indent
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [f"{pad}{_INDENT}{literal(str(k))}: {literal(v, indent + 1)},\n" for k, v in value.items()]
        return "{\n" + "".join(items) + pad + "}"
    if isinstance(value, (list, tuple)):
        opening, closing = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        if not value:
            return opening + closing
        flat = [literal(v, indent + 1) for v in value]
        one_line = ", ".join(flat) + ("," if isinstance(value, tuple) and len(value) == 1 else "")
        if all("\n" not in f for f in flat) and len(pad) + len(one_line) + 8 <= _LINE - 20:
            return opening + one_line + closing
        return opening + "\n" + "".join(f"{pad}{_INDENT}{f},\n" for f in flat) + pad + closing
    if isinstance(value, str):
        if '"' in value and "'" not in value:
            return repr(value)  # ruff format prefers the quote that needs no escape
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f'float("{value}")'
    raise TypeError(f"cannot write {type(value).__name__} {value!r} into a migration")


# A call's argument: text, or a nested call (function, arguments) laid out like the outer one.
Arg = str | tuple[str, tuple[str, ...]]


def _flat(arg: Arg) -> str:
    return arg if isinstance(arg, str) else f"{arg[0]}({', '.join(arg[1])})"


def _layout(function: str, args: Sequence[Arg], indent: int, tail: str) -> str:
    """``function(args)`` whose first line starts at ``indent`` and is followed by ``tail``: on
    one line when it fits (as ruff format would keep it), else one argument a line."""
    pad = _INDENT * indent
    line = f"{function}({', '.join(_flat(a) for a in args)})"
    if len(pad) + len(line) + len(tail) <= _LINE:
        return line
    inner = ""
    for arg in args:
        text = arg if isinstance(arg, str) else _layout(arg[0], arg[1], indent + 1, ",")
        inner += f"{pad}{_INDENT}{text},\n"
    return f"{function}(\n{inner}{pad})"


def _call(function: str, *args: Arg, indent: int = 1) -> str:
    """A statement calling ``function``, laid out as ruff format lays it out."""
    return _INDENT * indent + _layout(function, args, indent, "")


def _spec(spec: IndexSpec) -> Arg:
    args = [f"name={literal(spec.name)}", f"keys={literal(tuple(tuple(k) for k in spec.keys))}"]
    if spec.unique:
        args.append("unique=True")
    if spec.expire_after_seconds is not None:
        args.append(f"expire_after_seconds={spec.expire_after_seconds}")
    return ("IndexSpec", tuple(args))


def _options(options: CollectionOptions) -> Arg:
    args = []
    if options.collation:
        args.append(f"collation={literal(tuple(tuple(item) for item in options.collation))}")
    if options.capped_size is not None:
        args.append(f"capped_size={options.capped_size}")
    if options.capped_max is not None:
        args.append(f"capped_max={options.capped_max}")
    if options.clustered:
        args.append("clustered=True")
    if options.expire_after_seconds is not None:
        args.append(f"expire_after_seconds={options.expire_after_seconds}")
    return ("CollectionOptions", tuple(args))


def options_of(live: Mapping[str, Any]) -> CollectionOptions:
    """The ``CollectionOptions`` that re-create a live collection's options."""
    collation = live.get("collation") or {}
    ttl = live.get("expireAfterSeconds")
    return CollectionOptions(
        collation=tuple((str(k), v) for k, v in sorted(collation.items()) if k != "version"),
        capped_size=int(live["size"]) if live.get("capped") else None,
        capped_max=int(live["max"]) if live.get("capped") and live.get("max") else None,
        clustered=bool(live.get("clusteredIndex")),
        expire_after_seconds=None if ttl is None else int(ttl),
    )


# ---------------------------------------------------------------------------------------------
# The difference, as paired steps


@dataclass(frozen=True)
class Action:
    """One change: the statements ``up`` runs and those that undo them in ``down`` (``manual``:
    written as comments in ``up`` only, with the reason; ``note``: a comment above the step)."""

    subject: str
    up: tuple[str, ...]
    down: tuple[str, ...] = ()
    manual: str | None = None
    note: str | None = None


@dataclass
class CollectionChange:
    """What the migration does to one collection, from the state before to a declared version."""

    collection: str
    target: CollectionSchema
    before_version: int | None  # the declared version the state before matches, if any
    created: bool
    actions: list[Action] = field(default_factory=list)
    constants: dict[str, str] = field(default_factory=dict)  # NAME -> literal

    @property
    def manual(self) -> list[Action]:
        return [a for a in self.actions if a.manual]

    def summary(self) -> str:
        before = (
            "new" if self.created else (f"v{self.before_version}" if self.before_version else "unversioned")
        )
        return f"{self.collection}: {before} -> v{self.target.version}"


def _ident(name: str) -> str:
    """A constant-name prefix for collection ``name``: upper case, and unique to it (``a-b`` and
    ``a_b`` differ by a hash of the name; a leading digit gets a letter first)."""
    base = re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").upper()
    if base.lower() != name:
        base = f"{base}_{hashlib.sha256(name.encode()).hexdigest()[:6].upper()}".strip("_")
    return f"C_{base}" if base[:1].isdigit() else base


def _manual_index(subject: str, reason: str, statements: list[str]) -> Action:
    return Action(subject, tuple(statements), manual=reason)


def _keys(spec: IndexSpec) -> list[list[Any]]:
    return [[f, d] for f, d in spec.keys]


def _index_actions(change: CollectionChange, before: LiveCollection, after: CollectionSchema) -> None:
    """Index changes in two phases, as the server needs them: every drop first, then every
    build (two indexes may not share keys, so keys that move to another name are freed first).
    ``down`` undoes them in reverse: the new indexes dropped, then the old ones built again."""
    coll = after.collection
    name = literal(coll)
    declared = {spec.name: spec for spec in after.indexes}
    drops: list[tuple[str, Action]] = []  # (index dropped, action)
    creates: list[tuple[IndexSpec, Action]] = []  # (index built, action)

    def ensure(spec: IndexSpec) -> str:
        return _call("steps.ensure_index", "db", name, _spec(spec))

    def drop(index: str) -> str:
        return _call("steps.drop_index", "db", name, literal(index))

    # A unique index renamed (same keys, another name): never dropped by a generated step, or the
    # collection would be left without the constraint it declares (see the manual build below).
    renamed_unique = {
        other: spec.name
        for spec in after.indexes
        if spec.unique and spec.name not in before.indexes
        for other in set(before.indexes) - set(declared)
        if before.indexes[other]["key"] == _keys(spec) and before.indexes[other].get("unique")
    }
    for index in sorted(set(before.indexes) - set(declared)):
        old = before.spec(index)
        subject = f"{coll} index {index}"
        if index in renamed_unique:
            reason = f"the unique index {index} is renamed {renamed_unique[index]}: see that index"
            drops.append((index, _manual_index(subject, reason, [drop(index)])))
        elif old is None:
            reason = (
                f"{index} has options a schema cannot declare ({before.indexes[index]}): down could not "
                "build it again, so it is not dropped for you; drop it by hand once nothing needs it"
            )
            drops.append((index, _manual_index(subject, reason, [drop(index)])))
        else:
            drops.append((index, Action(subject, (drop(index),), (ensure(old),))))
    for index, spec in declared.items():
        subject = f"{coll} index {index}"
        have = before.indexes.get(index)
        old = before.spec(index)
        if have is None:
            if spec.unique and index in renamed_unique.values():
                reason = (
                    f"a unique index renamed {index}: the old one must be dropped before this one "
                    "can be built (the same keys), and records written meanwhile may duplicate"
                )
                old_names = [o for o, n in renamed_unique.items() if n == index]
                creates.append((spec, _manual_index(subject, reason, [drop(old_names[0]), ensure(spec)])))
                continue
            note = None
            if spec.unique:
                note = (
                    f"a unique index over existing records: if any duplicate {dict(spec.keys)}, the "
                    "build fails and the migration is recorded failed (nothing is dropped)"
                )
            creates.append((spec, Action(subject, (ensure(spec),), (drop(index),), note=note)))
            continue
        if old == spec:
            continue
        same_keys = have["key"] == _keys(spec)
        if old is not None and same_keys and old.unique == spec.unique:
            if spec.expire_after_seconds is not None:  # a TTL set or changed: collMod, in place
                # Undone by a rebuild when there was no TTL: collMod cannot remove one.
                undo = _rebuild(name, old) if old.expire_after_seconds is None else ensure(old)
                creates.append((spec, Action(subject, (ensure(spec),), (undo,))))
            elif spec.unique:
                reason = (
                    f"removing the TTL of the unique index {index} needs a rebuild: while it is "
                    "dropped, records written may duplicate and the new build then fails"
                )
                creates.append((spec, _manual_index(subject, reason, [_rebuild(name, spec)])))
            else:  # a TTL removed: the index is rebuilt (dropped, built again)
                creates.append((spec, Action(subject, (_rebuild(name, spec),), (ensure(old),))))
            continue
        if spec.unique:
            reason = (
                f"index {index} becomes unique over existing records, which may hold duplicates"
                if same_keys and old is not None and not old.unique
                else f"the unique index {index} changes its keys: the old one must be dropped first, "
                "and the new build fails over existing duplicates, leaving neither"
            )
            statements = [drop(index), ensure(spec)]
            creates.append(
                (spec, _manual_index(subject, reason + "; check for duplicates, then run:", statements))
            )
            continue
        # Other keys, unique dropped, or options a schema cannot declare: dropped, then built again.
        if old is None:
            reason = (
                f"the live {index} has options a schema cannot declare ({have}): down could not build "
                "it again; replace it by hand"
            )
            creates.append((spec, _manual_index(subject, reason, [drop(index), ensure(spec)])))
            continue
        warning = None
        if old.unique:
            warning = (
                f"down re-creates the unique index {index}: it fails if duplicates were written meanwhile"
            )
        drops.append((index, Action(subject, (drop(index),), (ensure(old),), note=warning)))
        creates.append((spec, Action(subject, (ensure(spec),), (drop(index),))))
    # A build whose keys an index left in place still holds would fail (code 85): left to a person.
    left = {i: d["key"] for i, d in before.indexes.items()}
    for index, action in drops:
        if not action.manual:
            left.pop(index, None)
    for position, (spec, action) in enumerate(creates):
        holders = [i for i, key in left.items() if key == _keys(spec) and i != spec.name]
        if holders and not action.manual:
            reason = (
                f"its keys {dict(spec.keys)} are held by index {holders[0]}, which this migration "
                "leaves in place (see above): build it once that one is dealt with"
            )
            creates[position] = (spec, _manual_index(action.subject, reason, list(action.up)))
    change.actions += [action for _, action in drops] + [action for _, action in creates]


def _rebuild(name: str, spec: IndexSpec) -> str:
    return _call("steps.ensure_index", "db", name, _spec(spec), "allow_rebuild=True")


def _validator_action(
    change: CollectionChange, before: LiveCollection | None, after: CollectionSchema
) -> None:
    wanted = (after.validator, after.validation_level, after.validation_action)
    if before is not None:
        if (before.validator, before.validation_level, before.validation_action) == wanted:
            return
    elif wanted == ({}, "strict", "error"):
        return
    base = _ident(after.collection)
    up_name = f"{base}_V{after.version}_VALIDATOR"
    change.constants[up_name] = literal(after.validator)
    name = literal(after.collection)
    up = _call(
        "steps.ensure_validator",
        "db",
        name,
        up_name,
        f"level={literal(after.validation_level)}",
        f"action={literal(after.validation_action)}",
    )
    down: tuple[str, ...] = ()
    if before is not None:
        down_name = f"{base}_BEFORE_VALIDATOR"
        change.constants[down_name] = literal(before.validator)
        down = (
            _call(
                "steps.ensure_validator",
                "db",
                name,
                down_name,
                f"level={literal(before.validation_level)}",
                f"action={literal(before.validation_action)}",
            ),
        )
    change.actions.append(Action(f"{after.collection} validator", (up,), down))


def _matching_version(schemas: SchemaSet, before: LiveCollection, target: CollectionSchema) -> int | None:
    for version in reversed(schemas.versions(target.collection)):
        if version != target.version and not compare(schemas.load(target.collection, version), before):
            return version
    return None


def collection_change(
    before: LiveCollection, after: CollectionSchema, schemas: SchemaSet | None = None
) -> CollectionChange | None:
    """The actions that take collection ``before`` to ``after`` (``None``: no difference)."""
    if before.exists and not compare(after, before):
        return None
    version = _matching_version(schemas, before, after) if schemas and before.exists else None
    change = CollectionChange(after.collection, after, version, created=not before.exists)
    name = literal(after.collection)
    if not before.exists:
        # Options always given, defaults too: an existing collection with other options is then
        # refused (SchemaStepConflict) instead of taken as it is.
        args: list[Arg] = ["db", name, _options(after.options)]
        change.actions.append(
            Action(
                f"collection {after.collection}",
                (_call("steps.ensure_collection", *args),),
                (_call("steps.drop_collection_if_empty", "db", name),),
                note="down drops the collection only while it holds no record",
            )
        )
        _validator_action(change, None, after)
        for spec in after.indexes:
            change.actions.append(
                Action(
                    f"{after.collection} index {spec.name}",
                    (_call("steps.ensure_index", "db", name, _spec(spec)),),
                )
            )
        return change
    differences = option_differences(after.options, before.options)
    fixed = [d for d in differences if d[0] != "expireAfterSeconds"]
    for option, want, have in differences if fixed else []:  # a TTL cannot be set on the wrong kind either
        change.actions.append(
            Action(
                f"{after.collection} option {option}",
                (_call("steps.ensure_collection", "db", name, _options(after.options)),),
                manual=f"collection options are fixed when a collection is created ({option}: {have!r} -> "
                f"{want!r}): copy the records into a new collection by hand",
            )
        )
    if differences and not fixed:  # a clustered collection's TTL: collMod, in place
        change.actions.append(
            Action(
                f"{after.collection} option expireAfterSeconds",
                (_call("steps.ensure_collection", "db", name, _options(after.options)),),
                (_call("steps.ensure_collection", "db", name, _options(options_of(before.options))),),
            )
        )
    _validator_action(change, before, after)
    _index_actions(change, before, after)
    return change


@dataclass
class Generated:
    """What ``new --autogenerate`` found: one change per declared collection that differs."""

    changes: list[CollectionChange]
    pins: dict[str, str]  # schema file name -> checksum of the declared versions targeted

    @property
    def manual(self) -> list[str]:
        """What it could not do safely, with the reason: ``subject: reason``."""
        return [f"{a.subject}: {a.manual}" for c in self.changes for a in c.manual]

    @property
    def manual_subjects(self) -> list[str]:
        """The drift subjects (``user_files index file_id_1``) left to a person."""
        return [a.subject for c in self.changes for a in c.manual]


def generate(
    schemas: SchemaSet,
    before: Mapping[str, LiveCollection],
    targets: Mapping[str, CollectionSchema] | None = None,
) -> Generated:
    """The changes from ``before`` (what the migrations build) to the newest declared version of
    every collection in ``schemas`` (or to ``targets``). Collections that are built but no
    longer declared are left alone: a generated migration never drops a collection."""
    targets = targets if targets is not None else schemas.newest()
    changes = []
    pins = {}
    for name, target in sorted(targets.items()):
        state = before.get(name, LiveCollection(name, exists=False))
        change = collection_change(state, target, schemas)
        if change is None:
            continue
        changes.append(change)
        if target.version in schemas.versions(name):
            pins[schemas.file_name(name, target.version)] = checksum(schemas.read_text(name, target.version))
    return Generated(changes, pins)


# ---------------------------------------------------------------------------------------------
# The migration file


def _comment(text: str, indent: int = 1, prefix: str = "# ") -> list[str]:
    pad = _INDENT * indent
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(pad) + len(prefix) + len(line) + 1 + len(word) > _LINE:
            lines.append(pad + prefix + line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    if line:
        lines.append(pad + prefix + line)
    return lines


def _commented(statement: str) -> list[str]:
    """A statement of ``up``'s body, commented out line by line."""
    return [f"{_INDENT}# {line[len(_INDENT) :]}" for line in statement.splitlines()]


def render(
    generated: Generated, *, migration_id: str, created: str, replayed: Sequence[str], schema_dir: str
) -> str:
    """The migration file's text: typed, ruff- and mypy-clean, pinned to its schema files."""
    changes = generated.changes
    title = "Schema change: " + ", ".join(c.summary() for c in changes) + "."
    built = f"migrations {replayed[0]} to {replayed[-1]}" if replayed else "no migration (an empty database)"
    head = [title, ""]
    head += _comment(
        f"Migration {migration_id}, generated by `new --autogenerate` on {created} from the declared "
        f"schema in {schema_dir}: the difference from the state {built} build. Review it before "
        "applying it; once applied it is immutable.",
        0,
        "",
    )
    # A docstring holds the text as it is: backslashes (a Windows path) and quotes escaped.
    docstring = "\n".join(head).replace("\\", "\\\\").replace('"', '\\"')
    lines = [f'"""{docstring}', '"""']
    lines += ["", "from __future__ import annotations", "", "from typing import Any", ""]
    code = "\n".join(s for c in changes for a in c.actions if not a.manual for s in a.up + a.down)
    used = [n for n in ("CollectionOptions", "IndexSpec") if f"{n}(" in code]
    imports = ["from userfiles_db.migrate import steps"] if "steps." in code else []
    imports += [f"from userfiles_db.schema import {', '.join(used)}"] if used else []
    lines += [*imports, ""] if imports else []
    lines += _comment(
        "The declared schema files this migration was generated from, with their checksums: "
        "`check` reports one that changed after it (a published version is never edited).",
        0,
    )
    lines.append(f"SCHEMA_FILES: dict[str, str] = {literal(dict(sorted(generated.pins.items())))}")
    lines += _comment("What it could not do safely: commented steps in up(), with the reason.", 0)
    lines.append(f"MANUAL: list[str] = {literal(generated.manual_subjects)}")
    lines += [
        "REVERSIBLE = True",
        "TRANSACTIONAL = False",
        "# Every step is idempotent: an interrupted run is resumed.",
        "RESUMABLE = True",
    ]
    for change in changes:
        for constant, text in change.constants.items():
            lines += ["", f"{constant}: dict[str, Any] = {text}"]
    lines += ["", "", "def up(db: Any) -> None:"]
    body: list[str] = []
    for change in changes:
        body += [f"{_INDENT}# {change.summary()}"]
        for action in change.actions:
            if action.manual:
                body += _comment(f"MANUAL, not run: {action.subject}: {action.manual}")
                for statement in action.up:
                    body += _commented(statement)
                continue
            if action.note:
                body += _comment(f"Note: {action.note}")
            body += list(action.up)
    if not any(not line.lstrip().startswith("#") for line in body):  # only manual steps: comments
        body.append(f"{_INDENT}return None")
    lines += body
    lines += ["", "", "def down(db: Any) -> None:"]
    body = []
    for change in reversed(changes):
        undo = [a for a in reversed(change.actions) if not a.manual]
        if not undo:
            continue
        body += [f"{_INDENT}# {change.collection}: back to the state before"]
        for action in undo:
            if not action.down and action.note:
                body += _comment(f"Note: {action.note}")
            body += list(action.down)
    if not any(not line.lstrip().startswith("#") for line in body):
        body.append(f"{_INDENT}return None")
    lines += body
    return "\n".join(lines) + "\n"


_PINNED = re.compile(r"^(?P<collection>.+)\.v(?P<version>[1-9][0-9]*)\.yaml$")


def pinned_file_problems(migrations: Sequence[Migration], schemas: SchemaSet) -> list[str]:
    """A published schema version is never edited: every schema file a generated migration was
    generated from (its ``SCHEMA_FILES``) must still be in ``schemas`` with the same checksum."""
    problems = []
    for migration in migrations:
        pins = getattr(migration.module, "SCHEMA_FILES", None)
        if not isinstance(pins, dict):
            continue
        for file_name, pinned in sorted(pins.items()):
            match = _PINNED.match(str(file_name))
            collection, version = (match["collection"], int(match["version"])) if match else ("", 0)
            if version not in schemas.versions(collection):
                problems.append(
                    f"{file_name}, which {migration.id} was generated from, is not in {schemas.label}"
                )
            elif checksum(schemas.read_text(collection, version)) != pinned:
                problems.append(
                    f"{file_name} changed after {migration.id} was generated from it: a published "
                    "version is never edited (restore it, and declare the change as a new version)"
                )
    return problems
