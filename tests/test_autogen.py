"""``new --autogenerate``, ``check`` over several collections and the schema pins, on the real server.

The scenario of the issue: a schema directory with user_files v1 and v2 (an optional field, one
more index) and a second collection with a TTL index; generate, up, check, down, check, up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result
from pymongo import MongoClient
from pymongo.database import Database

from tests.migration_fixtures import migrations_copy, schema_project, write_schema
from userfiles_db.cli import State, cli
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import Runner, discover, drift
from userfiles_db.migrate.autogen import generate, literal, render, replay
from userfiles_db.migrate.drift import live_collection
from userfiles_db.schema import SchemaSet

REPO = Path(__file__).resolve().parent.parent
V1 = yaml.safe_load((REPO / "schema" / "user_files.v1.yaml").read_text())


def user_files_v2() -> dict[str, Any]:
    v2: dict[str, Any] = json.loads(json.dumps(V1))
    v2["version"] = 2
    v2["validator"]["$jsonSchema"]["properties"]["tag"] = {
        "bsonType": "string",
        "description": "optional label",
    }
    v2["indexes"].append({"name": "user_id_1_tag_1", "keys": [["user_id", 1], ["tag", 1]]})
    return v2


EVENTS_V1 = {
    "collection": "events",
    "version": 1,
    "validator": {
        "$jsonSchema": {"bsonType": "object", "required": ["at"], "properties": {"at": {"bsonType": "date"}}}
    },
    "indexes": [
        {"name": "at_1", "keys": [["at", 1]], "expire_after_seconds": 3600},
        {"name": "kind_1", "keys": [["kind", 1]]},
    ],
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project: the bundled migrations copied, and a schema directory (v1 only, so far)."""
    return schema_project(tmp_path)


@pytest.fixture
def run(mongod: LocalMongod, real_db: Database[Any], project: Path) -> Any:
    def invoke(*args: str, code: int = 0) -> Result:
        environ = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name, "USERFILES_SCRATCH_URI": mongod.uri}
        state = State(environ=environ, cwd=project)
        result = CliRunner().invoke(
            cli,
            ["--schema", "schema", "--migrations", "migrations", *args],
            obj=state,
            catch_exceptions=False,
        )
        assert result.exit_code == code, result.output
        return result

    return invoke


def test_generate_up_check_down_check_up(
    run: Any, project: Path, real_db: Database[Any], mongo_client: MongoClient[dict[str, Any]]
) -> None:
    databases = set(mongo_client.list_database_names())
    # The bundled migrations build schema v1 exactly: nothing to generate, nothing written.
    result = run("new", "nothing", "--autogenerate")
    assert "No changes: the migrations in" in result.stdout
    assert sorted(p.name for p in (project / "migrations").glob("*.py")) == [
        "0001_create_user_files.py", "0002_adopt_legacy_records.py", "0003_enable_ttl.py",
        "0004_enforce_validator.py", "__init__.py",
    ]  # fmt: skip

    write_schema(project / "schema", user_files_v2(), EVENTS_V1)
    result = run("new", "schema_v2", "--autogenerate")
    created = project / "migrations" / "0005_schema_v2.py"
    assert result.stdout.splitlines() == [
        f"Created {created}",
        "  events: new -> v1: 4 step(s)",
        "  user_files: v1 -> v2: 2 step(s)",
    ]
    assert set(mongo_client.list_database_names()) == databases  # the scratch database is gone
    text = created.read_text()
    assert '"events.v1.yaml": "' in text
    assert '"user_files.v2.yaml": "' in text
    assert "MANUAL: list[str] = []" in text

    run("up")
    result = run("check")
    assert result.stdout.splitlines() == [
        "events (schema v1): no drift",
        "user_files (schema v2): no drift",
        "No drift: the 2 collections match the declared schema.",
    ]
    assert real_db["events"].index_information()["at_1"]["expireAfterSeconds"] == 3600

    run("down", "--steps", "1")
    result = run("check", code=4)
    assert result.stdout.splitlines() == [
        "drift: collection events: declared 'exists', live 'missing'",
        "drift: user_files validator: differs at $jsonSchema.properties.tag (declared only)",
        "drift: user_files index user_id_1_tag_1: declared {'key': [['user_id', 1], ['tag', 1]]}, live None",
        "events (schema v1): 1 difference(s)",
        "user_files (schema v2): 2 difference(s)",
    ]
    data = json.loads(run("check", "--json", code=4).stdout)
    assert [d["subject"] for d in data["collections"]["user_files"]["drift"]] == [
        "user_files validator", "user_files index user_id_1_tag_1",
    ]  # fmt: skip
    assert data["collections"]["events"]["version"] == 1

    run("up")
    assert run("check").stdout.splitlines()[-1] == "No drift: the 2 collections match the declared schema."
    # Nothing more to generate once the new migration exists.
    assert "No changes" in run("new", "again", "--autogenerate").stdout


def test_an_edited_published_version_is_reported_by_check(run: Any, project: Path) -> None:
    write_schema(project / "schema", EVENTS_V1)
    run("new", "events", "--autogenerate")
    run("up")
    assert run("check").stdout.splitlines()[-1] == "No drift: the 2 collections match the declared schema."
    edited = project / "schema" / "events.v1.yaml"
    edited.write_text(edited.read_text() + "# an innocent comment\n")  # YAML-equal, but edited
    result = run("check", code=4)
    assert result.stdout.splitlines()[0] == (
        "schema: events.v1.yaml changed after 0005_events was generated from it: a published "
        "version is never edited (restore it, and declare the change as a new version)"
    )
    edited.unlink()
    result = run("check", code=4)
    assert (
        result.stdout
        == f"schema: events.v1.yaml, which 0005_events was generated from, is not in {edited.parent}\n"
    )


def test_a_failing_migration_fails_the_replay_and_writes_nothing(run: Any, project: Path) -> None:
    (project / "migrations" / "0005_broken.py").write_text(
        '"""Broken."""\n\ndef up(db):\n    raise RuntimeError("boom")\n\ndef down(db):\n    pass\n'
    )
    write_schema(project / "schema", EVENTS_V1)
    result = run("new", "next", "--autogenerate", code=1)
    assert (
        "replaying the existing migrations on a scratch database failed: "
        "0005_broken failed: RuntimeError: boom" in (result.stderr)
    )
    assert not list((project / "migrations").glob("0006_*"))


def test_unsafe_changes_are_commented_with_their_reason(
    run: Any, project: Path, real_db: Database[Any]
) -> None:
    v2 = json.loads(json.dumps(V1))
    v2["version"] = 2
    # file_id_1 stays unique but on other keys; the TTL index keeps its name with a new TTL.
    v2["indexes"][0] = {"name": "file_id_1", "keys": [["file_id", 1], ["user_id", 1]], "unique": True}
    v2["indexes"][2]["expire_after_seconds"] = 60
    write_schema(project / "schema", v2)
    run("new", "keys", "--autogenerate")
    text = (project / "migrations" / "0005_keys.py").read_text()
    assert 'MANUAL: list[str] = ["user_files index file_id_1"]' in text
    comments = " ".join(
        line.strip().lstrip("# ") for line in text.splitlines() if line.strip().startswith("#")
    )
    assert (
        "MANUAL, not run: user_files index file_id_1: the unique index file_id_1 changes its keys" in comments
    )
    assert '    # steps.drop_index(db, "user_files", "file_id_1")' in text
    run("up")
    # The TTL changed in place; the unique index is left for a person, and check says so.
    assert real_db["user_files"].index_information()["expires_at_1"]["expireAfterSeconds"] == 60
    result = run("check", code=4)
    assert [
        line.split(":")[1].strip() for line in result.stdout.splitlines() if line.startswith("drift")
    ] == ["user_files index file_id_1"]
    run("down", "--steps", "1")
    assert real_db["user_files"].index_information()["expires_at_1"]["expireAfterSeconds"] == 0


def test_the_generated_file_passes_ruff_and_mypy(
    tmp_path: Path, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    """Every kind of step, manual ones included, in one file: ruff check (the project's rules
    and the defaults), ruff format --check (default line length) and mypy --strict."""
    scratch = mongo_client["t_autogen_lint"]
    mongo_client.drop_database(scratch.name)
    migrations = discover(migrations_copy(tmp_path))
    try:
        before = replay(scratch, migrations)
    finally:
        mongo_client.drop_database(scratch.name)
    v2 = user_files_v2()
    v2["indexes"][0]["keys"] = [["file_id", 1], ["user_id", 1]]  # manual: a unique key change
    v2["indexes"][2].pop("expire_after_seconds")  # a TTL removed: a rebuild
    v2["validation_action"] = "warn"
    clustered = {
        "collection": "audit-log.v2", "version": 3, "indexes": [],
        "options": {"clustered": True, "expire_after_seconds": 86400, "collation": {"locale": "fr"}},
    }  # fmt: skip
    schemas = SchemaSet.directory(write_schema(tmp_path / "schema", V1, v2, EVENTS_V1, clustered))
    generated = generate(schemas, before)
    assert generated.manual
    assert len(generated.changes) == 3
    path = tmp_path / "migrations" / "0005_lint.py"
    path.write_text(render(generated, migration_id="0005_lint", created="2026-12-05T00:00:00+00:00",
                           replayed=[m.id for m in migrations], schema_dir="schema"))  # fmt: skip
    checks = [
        [
            "ruff",
            "check",
            "--isolated",
            "--select",
            "E,F,W,I,B,UP,SIM,RUF",
            "--line-length",
            "110",
            str(path),
        ],
        ["ruff", "check", "--isolated", str(path)],
        ["ruff", "format", "--isolated", "--check", "--diff", str(path)],
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "--follow-imports",
            "silent",
            str(path),
        ],
    ]
    for command in checks:
        # mypy cannot follow an editable install's import hook: it is shown the checkout.
        env = {**os.environ, "MYPYPATH": str(REPO)}
        done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    assert discover(path.parent)[-1].id == "0005_lint"  # it loads as a migration


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, None, True], "b": {"c": 'say "hi"', "d": "it's", "e": "ünï\n\t"}},
        {"$jsonSchema": {"enum": [["x"], [], {}], "x": float("inf"), "big": 2**70}},
        [("a", 1)],
    ],
)
def test_literals_read_back_as_the_same_value(value: Any) -> None:
    assert eval(literal(value)) == value


def test_indexes_a_schema_cannot_declare_are_left_to_a_person(tmp_path: Path, real_db: Database[Any]) -> None:
    """Text, hashed, sparse and partial indexes: drift sees them; the generated migration does not
    drop them (its down could not build them again) but lists them in MANUAL; up and down leave
    them exactly as they were."""
    collection = real_db["x"]
    collection.create_index([("t", "text")], name="t_text")
    collection.create_index([("h", "hashed")], name="h_hashed")
    collection.create_index("s", name="s_1", sparse=True)
    collection.create_index("p", name="p_1", partialFilterExpression={"p": {"$exists": True}})
    indexes = [{"name": "s_1", "keys": [["s", 1]]}, {"name": "p_2", "keys": [["p", 1]]}]
    declared = {"collection": "x", "version": 1, "indexes": [*indexes, {"name": "k_1", "keys": [["k", 1]]}]}
    schemas = SchemaSet.directory(write_schema(tmp_path / "schema", declared))
    before = {"x": live_collection(real_db, "x")}
    generated = generate(schemas, before)
    assert sorted(generated.manual_subjects) == [
        "x index h_hashed",
        "x index p_1",
        "x index p_2",
        "x index s_1",
        "x index t_text",
    ]  # fmt: skip  (p_2: its keys stay held by p_1)
    (tmp_path / "migrations").mkdir()
    (tmp_path / "migrations" / "0001_x.py").write_text(
        render(generated, migration_id="0001_x", created="now", replayed=[], schema_dir="schema")
    )
    runner = Runner(real_db, discover(tmp_path / "migrations"))
    runner.up()
    after = live_collection(real_db, "x")
    assert {k: v for k, v in after.indexes.items() if k != "k_1"} == before["x"].indexes
    assert {d.subject for d in drift(real_db, schemas.load("x"))} == set(generated.manual_subjects)
    runner.down(steps=1)
    assert live_collection(real_db, "x").indexes == before["x"].indexes
