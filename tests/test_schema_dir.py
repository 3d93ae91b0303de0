"""Schema directories (``NAME.vN.yaml`` for any collection) and collection options: parsing, the
errors a person gets, and the options on the real server (created, compared, refused, changed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database

from userfiles_db.cli import State, cli
from userfiles_db.errors import SchemaError
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import steps
from userfiles_db.migrate.context import RunContext, running
from userfiles_db.migrate.drift import drift, live_collection
from userfiles_db.migrate.errors import SchemaStepConflict
from userfiles_db.migrate.steps import ReadOnlyDatabase
from userfiles_db.schema import CollectionOptions, SchemaSet, load_schema, parse_schema

EVENTS = (
    "collection: events\nversion: 1\nindexes:\n  - {name: at_1, keys: [[at, 1]], expire_after_seconds: 60}\n"
)


def folder_with(tmp_path: Path, **files: str) -> Path:
    for name, text in files.items():
        (tmp_path / name.replace("__", ".")).write_text(text)
    return tmp_path


def test_a_directory_declares_several_collections_and_versions(tmp_path: Path) -> None:
    (tmp_path / "user_files.v1.yaml").write_text(Path("schema/user_files.v1.yaml").read_text())
    (tmp_path / "events.v1.yaml").write_text(EVENTS)
    (tmp_path / "events.v2.yaml").write_text(EVENTS.replace("version: 1", "version: 2").replace("60", "120"))
    (tmp_path / "README.txt").write_text("ignored")
    schemas = SchemaSet.directory(tmp_path)
    assert schemas.collections() == ["events", "user_files"]
    assert schemas.versions("events") == [1, 2]
    newest = schemas.newest()
    assert newest["events"].version == 2
    assert newest["events"].index("at_1").expire_after_seconds == 120
    assert newest["events"].validator == {}  # none declared
    assert newest["user_files"] == load_schema("user_files", 1)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("events.v2.yml", EVENTS, "schema files are named NAME.vN.yaml"),
        ("events_v1.yaml", EVENTS, "schema files are named NAME.vN.yaml"),
        ("events.v0.yaml", EVENTS, "schema files are named NAME.vN.yaml"),
        ("system.views.v1.yaml", EVENTS, "schema files are named NAME.vN.yaml"),
        ("events.v1.yaml", EVENTS.replace("version: 1", "version: 2"), "declares events v2"),
        ("events.v1.yaml", EVENTS + "version: 1\n", "'version' is given twice"),
        ("events.v1.yaml", EVENTS + "options: {collation: {strength: 2}}\n", "at least 'locale'"),
        (
            "events.v1.yaml",
            EVENTS + "options: {collation: {locale: en, strength: 9}}\n",
            "strength must be one of",
        ),
        ("events.v1.yaml", EVENTS + "options: {capped: {size: 0}}\n", "'capped' must be"),
        ("events.v1.yaml", EVENTS + "options: {expire_after_seconds: 60}\n", "needs 'clustered: true'"),
        (
            "events.v1.yaml",
            EVENTS + "options: {clustered: true, capped: {size: 4096}}\n",
            "both capped and clustered",
        ),
        ("events.v1.yaml", EVENTS + "options: {colation: {locale: en}}\n", "'options' is a mapping of"),
        ("events.v1.yaml", EVENTS + "  - {name: at_2, keys: [[at, 1]]}\n", "two indexes have the same keys"),
        ("events.v1.yaml", EVENTS + "  - {name: _id_, keys: [[x, 1]]}\n", "other than _id_"),
        (
            "events.v1.yaml",
            EVENTS + "  - {name: x, keys: [[x, 1]], unique: 'yes'}\n",
            "'unique' must be true or false",
        ),
        (
            "events.v1.yaml",
            EVENTS + "  - {name: i, keys: [[_id, 1]], expire_after_seconds: 5}\n",
            "_id cannot carry",
        ),
        ("events.v1.yaml", EVENTS + "  - {name: ab, keys: [[a, 1], [a, -1]]}\n", "a field appears twice"),
        ("events.v1.yaml", "a: &x [1]\nb: *x\n", "aliases (*name) are not allowed"),
        ("events.v1.yaml", "collection: events\nversion: one\nindexes: []\n", "'version' must be an integer"),
    ],
)
def test_a_bad_schema_file_is_an_error_naming_it(tmp_path: Path, name: str, text: str, message: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(SchemaError, match=None) as caught:
        SchemaSet.directory(tmp_path).newest()
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_a_missing_schema_directory_exits_2_from_the_cli(tmp_path: Path) -> None:
    state = State(environ={"MONGODB_URI": "mongodb://127.0.0.1:9/", "MONGODB_DB": "x"}, cwd=tmp_path)
    result = CliRunner().invoke(
        cli, ["--schema", "nowhere", "--migrations", "m", "new", "x", "--autogenerate"], obj=state
    )
    assert result.exit_code == 2, result.output
    assert f"Error: schema directory '{tmp_path / 'nowhere'}' does not exist" in result.stderr


def test_options_are_created_and_compared_on_the_real_server(real_db: Database[Any]) -> None:
    collation = parse_schema(
        {"collection": "a", "version": 1, "indexes": [{"name": "x_1", "keys": [["x", 1]]}],
         "options": {"collation": {"locale": "en", "strength": 2}}}, "a.v1.yaml",
    )  # fmt: skip
    capped = parse_schema({"collection": "b", "version": 1, "indexes": [],
                           "options": {"capped": {"size": 1000, "max": 10}}}, "b.v1.yaml")  # fmt: skip
    clustered = parse_schema(
        {
            "collection": "c",
            "version": 1,
            "indexes": [],
            "options": {"clustered": True, "expire_after_seconds": 3600},
        },
        "c.v1.yaml",
    )
    for schema in (collation, capped, clustered):
        assert steps.ensure_collection(real_db, schema.collection, schema.options) == "created"
        for spec in schema.indexes:
            steps.ensure_index(real_db, schema.collection, spec)
        # The server fills in the collation, rounds the size up and describes the clustered index:
        # none of that is drift, and a second run sends nothing.
        assert drift(real_db, schema) == []
        assert steps.ensure_collection(real_db, schema.collection, schema.options) == "exists"
    assert (
        real_db.command("listCollections", filter={"name": "b"})["cursor"]["firstBatch"][0]["options"]["size"]
        == 1024
    )
    # A clustered collection's TTL changes in place; the other options are refused, nothing changed.
    shorter = CollectionOptions(clustered=True, expire_after_seconds=60)
    assert steps.ensure_collection(real_db, "c", shorter) == "changed"
    assert live_collection(real_db, "c").options["expireAfterSeconds"] == 60
    with pytest.raises(SchemaStepConflict, match=r"collation: declared \{'locale': 'fr'\}"):
        steps.ensure_collection(real_db, "a", CollectionOptions(collation=(("locale", "fr"),)))
    assert live_collection(real_db, "a").options["collation"]["locale"] == "en"
    assert [
        d.subject
        for d in drift(real_db, collation.__class__(**{**collation.__dict__, "options": CollectionOptions()}))
    ] == ["a option collation"]


def test_the_new_steps_are_idempotent_and_dry_run_aware(real_db: Database[Any]) -> None:
    real_db["full"].insert_one({"x": 1})
    real_db["full"].create_index("x")
    real_db.create_collection("empty")
    preview = ReadOnlyDatabase(real_db)
    with running(RunContext(dry_run=True)) as ctx:
        assert steps.drop_index(preview, "full", "x_1") == "would drop"
        assert steps.drop_collection_if_empty(preview, "empty") == "would drop"
        assert steps.drop_collection_if_empty(preview, "full") == "kept"
    assert ctx.planned == ["drop index x_1 on full", "drop collection empty (empty)"]
    assert "x_1" in real_db["full"].index_information()  # nothing was sent
    assert sorted(real_db.list_collection_names()) == ["empty", "full"]
    assert steps.drop_index(real_db, "full", "x_1") == "dropped"
    assert steps.drop_index(real_db, "full", "x_1") == "absent"
    assert steps.drop_collection_if_empty(real_db, "full") == "kept"  # it holds a record
    assert steps.drop_collection_if_empty(real_db, "empty") == "dropped"
    assert steps.drop_collection_if_empty(real_db, "empty") == "absent"
    assert real_db.list_collection_names() == ["full"]


def test_check_and_plan_write_nothing(mongod: LocalMongod, real_db: Database[Any], tmp_path: Path) -> None:
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "events.v1.yaml").write_text(EVENTS)
    state = State(environ={"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}, cwd=tmp_path)
    # plan: 4, no migration creates the declared events collection (the bundled ones build user_files)
    for command, code in (("check", 4), ("plan", 4)):
        result = CliRunner().invoke(cli, ["--schema", "schema", command], obj=state, catch_exceptions=False)
        assert result.exit_code == code, result.output
    assert real_db.list_collection_names() == []


def test_drop_if_empty_never_drops_a_record_written_during_the_check(
    real_db: Database[Any], mongo_client: Any
) -> None:
    """A writer races the drop: every insert the server acknowledged is still there afterwards
    (refused ones, code 121 while the collection is closed, were never written)."""
    import random
    import threading
    import time

    from pymongo.errors import WriteError

    outcomes = []
    for round_ in range(40):
        name = f"race{round_}"
        real_db.create_collection(name)
        acknowledged: list[int] = []

        def write(collection: str = name, stamp: int = round_, done: list[int] = acknowledged) -> None:
            time.sleep(random.random() * 0.01)
            try:
                real_db[collection].insert_one({"_id": stamp})
                done.append(stamp)
            except WriteError as exc:
                assert exc.code == 121

        writer = threading.Thread(target=write)
        writer.start()
        outcomes.append(steps.drop_collection_if_empty(real_db, name))
        writer.join()
        assert [d["_id"] for d in real_db[name].find()] == acknowledged, (round_, outcomes[-1])
        if name in real_db.list_collection_names():  # kept: its options are back (no validator)
            assert "validator" not in live_collection(real_db, name).options
            assert live_collection(real_db, name).validator == {}
    assert "dropped" in outcomes  # the race was run, not skipped


def test_autogenerate_needs_the_projects_migrations_directory(tmp_path: Path) -> None:
    state = State(environ={"MONGODB_URI": "mongodb://127.0.0.1:9/", "MONGODB_DB": "x"}, cwd=tmp_path)
    result = CliRunner().invoke(cli, ["new", "x", "--autogenerate"], obj=state)
    assert result.exit_code == 2, result.output
    assert "--autogenerate writes the migration that follows those `up` runs" in result.stderr
    assert not (tmp_path / "migrations").exists()
