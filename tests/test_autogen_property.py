"""Property: for random pairs of declared states, the generated migration takes a database in the
first state to no drift against the second (but for what it lists in MANUAL, which it leaves
untouched), and its ``down`` takes it back to no drift against the first. On the real server,
through the generated file itself (written, loaded and run by the engine like any migration).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import MongoClient
from pymongo.database import Database

from userfiles_db.migrate import Runner, discover
from userfiles_db.migrate.autogen import generate, render
from userfiles_db.migrate.drift import compare, live_collection
from userfiles_db.schema import CollectionSchema, SchemaSet, parse_schema

VALIDATORS = [
    None,
    {"$jsonSchema": {"bsonType": "object", "required": ["a"], "properties": {"a": {"bsonType": "int"}}}},
    {"$jsonSchema": {"bsonType": "object", "properties": {"b": {"bsonType": ["int", "long"], "minimum": 0}}}},
]
KEYS = [[["a", 1]], [["a", -1]], [["a", 1], ["b", 1]], [["b", 1]], [["c", 1]]]


@st.composite
def indexes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Up to four indexes from a small pool of names, so that pairs share names: the same index
    kept, changed (keys, unique, TTL) or renamed, added and dropped."""
    chosen: list[dict[str, Any]] = []
    used_keys: list[Any] = []
    for name in draw(st.lists(st.sampled_from(["i1", "i2", "i3", "i4"]), unique=True, max_size=4)):
        keys = draw(st.sampled_from(KEYS))
        if keys in used_keys:  # two indexes on the same keys: the server refuses it (85)
            continue
        used_keys.append(keys)
        index: dict[str, Any] = {"name": name, "keys": keys}
        if draw(st.booleans()):
            index["unique"] = True
        if len(keys) == 1 and draw(st.booleans()):
            index["expire_after_seconds"] = draw(st.sampled_from([0, 60, 3600]))
        chosen.append(index)
    return chosen


@st.composite
def things(draw: st.DrawFn, version: int) -> dict[str, Any] | None:
    if draw(st.integers(0, 5)) == 0:
        return None  # not declared in this state
    document: dict[str, Any] = {"collection": "things", "version": version, "indexes": draw(indexes())}
    validator = draw(st.sampled_from(VALIDATORS))
    if validator is not None:
        document["validator"] = validator
    document["validation_level"] = draw(st.sampled_from(["strict", "moderate"]))
    document["validation_action"] = draw(st.sampled_from(["error", "warn"]))
    if draw(st.integers(0, 4)) == 0:
        document["options"] = {"collation": {"locale": "en", "strength": 2}}
    return document


@st.composite
def others(draw: st.DrawFn, version: int) -> dict[str, Any] | None:
    """A second collection: clustered or not, with or without a collection TTL, or absent."""
    kind = draw(st.sampled_from(["absent", "plain", "clustered"]))
    if kind == "absent":
        return None
    document: dict[str, Any] = {"collection": "others", "version": version, "indexes": []}
    if kind == "clustered":
        document["options"] = {"clustered": True}
        ttl = draw(st.sampled_from([None, 60, 86400]))
        if ttl is not None:
            document["options"]["expire_after_seconds"] = ttl
    if draw(st.booleans()):
        document["indexes"] = [{"name": "at_1", "keys": [["at", 1]], "expire_after_seconds": 3600}]
    return document


def build(db: Database[Any], schema: CollectionSchema) -> None:
    """Make ``schema``'s collection with the driver alone (not the steps under test), with a few
    records that every declared validator and unique index accepts and no TTL deletes."""
    extra: dict[str, Any] = dict(schema.options.create_options())
    if schema.validator:
        extra["validator"] = schema.validator
    collection = db.create_collection(
        schema.collection, validationLevel=schema.validation_level, validationAction=schema.validation_action,
        **extra,
    )  # fmt: skip
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=30)
    if schema.options.clustered:
        collection.insert_many([{"_id": later + dt.timedelta(seconds=n), "at": later} for n in range(3)])
    else:
        collection.insert_many([{"a": n, "b": n, "c": later + dt.timedelta(seconds=n)} for n in range(3)])
    for spec in schema.indexes:
        collection.create_index(list(spec.keys), **spec.create_options())


def declared(folder: Path, documents: list[dict[str, Any] | None]) -> dict[str, CollectionSchema]:
    schemas = {}
    for document in documents:
        if document is None:
            continue
        path = folder / f"{document['collection']}.v{document['version']}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        schemas[document["collection"]] = parse_schema(document, path.name)
    return schemas


def drift_subjects(db: Database[Any], schemas: dict[str, CollectionSchema]) -> set[str]:
    return {d.subject for s in schemas.values() for d in compare(s, live_collection(db, s.collection))}


@settings(
    max_examples=int(os.environ.get("USERFILES_PROPERTY_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(first=st.tuples(things(1), others(1)), second=st.tuples(things(2), others(2)))
def test_the_generated_migration_reaches_the_second_state_and_its_down_the_first(
    mongo_client: MongoClient[dict[str, Any]],
    tmp_path_factory: Any,
    first: tuple[dict[str, Any] | None, ...],
    second: tuple[dict[str, Any] | None, ...],
) -> None:
    folder: Path = tmp_path_factory.mktemp("property")
    (folder / "schema").mkdir()
    before_schemas = declared(folder / "schema", list(first))
    after_schemas = declared(folder / "schema", list(second))
    db = mongo_client[f"t_prop_{uuid.uuid4().hex[:12]}"]
    try:
        for schema in before_schemas.values():
            build(db, schema)
        assert drift_subjects(db, before_schemas) == set()  # the first state, as declared
        before = {name: live_collection(db, name) for name in db.list_collection_names()}
        schemas = SchemaSet.directory(folder / "schema")
        generated = generate(schemas, before, after_schemas)
        migrations = folder / "migrations"
        migrations.mkdir()
        text = render(generated, migration_id="0001_generated", created="2026-12-05T00:00:00+00:00",
                      replayed=[], schema_dir="schema")  # fmt: skip
        (migrations / "0001_generated.py").write_text(text)
        runner = Runner(db, discover(migrations))

        runner.up()
        left = drift_subjects(db, after_schemas)
        assert left <= set(generated.manual_subjects), (left, generated.manual, text)
        assert left == {s for s in generated.manual_subjects if s in left}
        for name in set(before_schemas) - set(after_schemas):  # no longer declared: left as it was
            assert not compare(before_schemas[name], live_collection(db, name))

        runner.down(steps=1)
        assert drift_subjects(db, before_schemas) == set(), text
        for name in set(after_schemas) - set(before_schemas):  # created by up, empty: dropped by down
            assert not live_collection(db, name).exists, text
    finally:
        mongo_client.drop_database(db.name)
