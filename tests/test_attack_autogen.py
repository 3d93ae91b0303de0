"""Attacks on ``new --autogenerate``, ``check`` and ``plan`` over a schema directory (real server).

Each finding is a strict xfail naming what broke; tests that pass show a promise that holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import WriteError

from tests.migration_fixtures import schema_project, write_schema
from userfiles_db.cli import State, cli
from userfiles_db.local_server import LocalMongod

REPO = Path(__file__).resolve().parent.parent
OBJECT_X_INT = {"$jsonSchema": {"bsonType": "object", "properties": {"x": {"bsonType": "int"}}}}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return schema_project(tmp_path)


@pytest.fixture
def run(mongod: LocalMongod, real_db: Database[Any], project: Path) -> Any:
    """The CLI on the project; exceptions are caught so a traceback shows as a non-SystemExit."""

    def invoke(*args: str, code: int | None = 0) -> Result:
        environ = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name, "USERFILES_SCRATCH_URI": mongod.uri}
        state = State(environ=environ, cwd=project)
        result = CliRunner().invoke(
            cli, ["--schema", "schema", "--migrations", "migrations", *args], obj=state
        )
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(f"traceback from {args}: {result.exception!r}\n{result.output}")
        if code is not None:
            assert result.exit_code == code, result.output
        return result

    return invoke


def generated(project: Path) -> str:
    return sorted((project / "migrations").glob("0005_*.py"))[-1].read_text()


# ---------------------------------------------------------------------------------------------
# Generated code


def test_a_collection_name_starting_with_a_digit_generates_importable_code(run: Any, project: Path) -> None:
    """``1abc.v1.yaml`` is a valid schema file (and a valid MongoDB collection), but its
    validator constant is written ``1ABC_V1_VALIDATOR``: a SyntaxError. Every later command
    that loads the migrations (``up``, ``check``, ``status``) then fails with exit 2."""
    write_schema(
        project / "schema", {"collection": "1abc", "version": 1, "validator": OBJECT_X_INT, "indexes": []}
    )
    run("new", "digits", "--autogenerate")
    compile(generated(project), "0005_digits.py", "exec")  # SyntaxError: invalid decimal literal
    run("up")
    assert run("check").stdout.splitlines()[-1].startswith("No drift")


def test_collections_whose_names_differ_in_punctuation_keep_their_own_validator(
    run: Any, project: Path, real_db: Database[Any]
) -> None:
    """``_ident`` maps every run of non-alphanumerics to ``_``: ``a-b`` and ``a_b`` (or ``a.b``)
    both get ``A_B_V1_VALIDATOR``; the second definition wins, so ``up`` gives ``a-b`` the
    validator declared for ``a_b`` and reports success; ``check`` then shows drift."""
    other = {"$jsonSchema": {"bsonType": "object", "required": ["zzz"]}}
    write_schema(
        project / "schema",
        {"collection": "a-b", "version": 1, "validator": OBJECT_X_INT, "indexes": []},
        {"collection": "a_b", "version": 1, "validator": other, "indexes": []},
    )
    run("new", "punct", "--autogenerate")
    run("up")
    options = real_db.command("listCollections", filter={"name": "a-b"})["cursor"]["firstBatch"][0]["options"]
    assert options["validator"] == OBJECT_X_INT  # got a_b's {"required": ["zzz"]}
    assert run("check").stdout.splitlines()[-1].startswith("No drift")


def test_a_yaml_date_in_a_validator_is_a_clear_error_not_a_traceback(run: Any, project: Path) -> None:
    """``enum: [2020-01-01]`` is parsed by the safe loader as ``datetime.date``: the schema
    loads (``check`` accepts the file), but ``literal`` raises ``TypeError: cannot write date``
    out of ``new --autogenerate``: a traceback, not exit 2 naming the file."""
    (project / "schema" / "ev.v1.yaml").write_text(
        "collection: ev\nversion: 1\nindexes: []\n"
        "validator:\n  $jsonSchema:\n    properties:\n      d:\n        enum: [2020-01-01]\n"
    )
    result = run("new", "dates", "--autogenerate", code=2)
    assert "ev.v1.yaml" in result.output


def test_a_nan_in_a_validator_reaches_no_drift(run: Any, project: Path) -> None:
    """``minimum: .nan`` never equals itself: drift forever. Fixed at the source: a schema file
    holding a NaN is refused (exit 2, naming the file and the key) before anything runs."""
    validator = {"$jsonSchema": {"properties": {"x": {"minimum": float("nan")}}}}
    write_schema(
        project / "schema", {"collection": "ev", "version": 1, "validator": validator, "indexes": []}
    )
    result = run("new", "nan", "--autogenerate", code=2)
    assert (
        "ev.v1.yaml: validator.$jsonSchema.properties.x.minimum: nan is not a finite number" in result.output
    )


def test_a_validator_number_mongodb_cannot_store_is_refused_when_the_schema_loads(
    run: Any, project: Path
) -> None:
    """``maximum: 2**70``: ``check`` and ``new --autogenerate`` accept the file; the generated
    migration then fails on ``up`` with ``OverflowError: MongoDB can only handle up to 8-byte
    ints`` and is recorded failed. The schema loader should refuse it (exit 2, naming the file)."""
    validator = {"$jsonSchema": {"properties": {"x": {"maximum": 2**70}}}}
    write_schema(
        project / "schema", {"collection": "ev", "version": 1, "validator": validator, "indexes": []}
    )
    result = run("check", code=None)
    assert result.exit_code == 2, result.output
    assert "ev.v1.yaml" in result.output


def test_a_collection_name_mongodb_refuses_is_refused_when_the_schema_loads(run: Any, project: Path) -> None:
    """``a..v1.yaml`` declares collection ``a.`` (the file-name pattern allows a trailing dot);
    ``check``/``plan``/``new --autogenerate`` accept it and ``up`` fails with PyMongo's
    ``InvalidName: collection names must not start or end with '.'``."""
    write_schema(project / "schema", {"collection": "a.", "version": 1, "indexes": []})
    result = run("check", code=None)
    assert result.exit_code == 2, result.output
    assert "a..v1.yaml" in result.output


# ---------------------------------------------------------------------------------------------
# Drift that never goes away


def test_a_simple_collation_reaches_no_drift(run: Any, project: Path) -> None:
    """``options: {collation: {locale: simple}}`` is accepted; the server creates the collection
    with no collation at all, so ``check`` reports ``collation: declared {'locale': 'simple'},
    live None`` and ``new --autogenerate`` writes a MANUAL "copy the records" step."""
    write_schema(
        project / "schema",
        {"collection": "ev", "version": 1, "indexes": [], "options": {"collation": {"locale": "simple"}}},
    )
    run("new", "simple", "--autogenerate")
    run("up")
    assert run("check").stdout.splitlines()[-1].startswith("No drift")
    assert "No changes" in run("new", "again", "--autogenerate").stdout


def test_the_tools_own_collections_cannot_be_declared(run: Any, project: Path) -> None:
    """``migrations_changelog.v1.yaml`` is accepted. Autogenerate's replay leaves the tool's
    collections out of the state before, so it writes ``ensure_collection``/``ensure_index`` on
    the changelog every time: after ``up`` and ``check`` (no drift) it writes 0006 again.
    A schema should not declare (and a migration not reshape) the engine's own records."""
    write_schema(
        project / "schema",
        {
            "collection": "migrations_changelog",
            "version": 1,
            "indexes": [{"name": "x_1", "keys": [["x", 1]]}],
        },
    )
    result = run("new", "tool", "--autogenerate", code=None)
    if result.exit_code == 2:
        assert "migrations_changelog" in result.output
        return
    run("up")
    assert "No changes" in run("new", "again", "--autogenerate").stdout


# ---------------------------------------------------------------------------------------------
# Scratch database


def test_a_bad_scratch_uri_fails_fast_without_showing_its_password(run: Any, project: Path) -> None:
    """Holds: an unreachable scratch server is an error within seconds (even with a huge
    serverSelectionTimeoutMS in the URI) and the password is redacted; nothing is written."""
    write_schema(project / "schema", {"collection": "ev", "version": 1, "indexes": []})
    started = time.monotonic()
    uri = "mongodb://bob:hunter2secret@127.0.0.1:1/?serverSelectionTimeoutMS=600000"
    result = run("new", "x", "--autogenerate", "--scratch-uri", uri, code=1)
    assert time.monotonic() - started < 30
    assert "hunter2secret" not in result.output
    assert "127.0.0.1:1" in result.output
    assert not list((project / "migrations").glob("0005_*"))


def test_the_scratch_database_is_dropped_after_a_failed_replay(
    run: Any, project: Path, mongo_client: MongoClient[dict[str, Any]]
) -> None:
    """Holds: a migration that fails during the replay leaves no scratch database behind."""
    (project / "migrations" / "0005_broken.py").write_text(
        '"""Broken."""\n\ndef up(db):\n    db["t"].insert_one({})\n    raise RuntimeError("boom")\n\n'
        "def down(db):\n    pass\n"
    )
    before = set(mongo_client.list_database_names())
    run("new", "x", "--autogenerate", code=1)
    assert set(mongo_client.list_database_names()) == before


# ---------------------------------------------------------------------------------------------
# Data loss


def test_down_keeps_a_created_collection_once_it_holds_records(
    run: Any, project: Path, real_db: Database[Any]
) -> None:
    """Holds: a collection the migration created, written to, then ``down``: it is kept."""
    write_schema(
        project / "schema", {"collection": "ev", "version": 1, "validator": OBJECT_X_INT, "indexes": []}
    )
    run("new", "ev", "--autogenerate")
    run("up")
    real_db["ev"].insert_one({"x": 1})
    result = run("down", "--steps", "1")
    assert "kept collection ev: it holds 1 record(s)" in result.output
    assert real_db["ev"].count_documents({}) == 1


def test_a_record_written_between_the_emptiness_check_and_the_drop_survives_down(
    run: Any, project: Path, real_db: Database[Any], mongo_client: MongoClient[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """``drop_collection_if_empty`` reads ``find_one`` and then calls ``drop_collection``: not
    atomic. A writer (here another client, acknowledged) whose insert lands in that window
    loses its record: ``down`` reports "drop collection ev (empty)" and the record is gone.
    The window is opened deterministically by running the writer's insert just before the
    server's drop (what a concurrent application write does by chance)."""
    write_schema(project / "schema", {"collection": "ev", "version": 1, "indexes": []})
    run("new", "ev", "--autogenerate")
    run("up")
    writer = mongo_client[real_db.name]["ev"]
    real_drop = Database.drop_collection

    acknowledged: list[bool] = []

    def drop_after_a_concurrent_write(self: Database[Any], name: Any, *args: Any, **kwargs: Any) -> Any:
        if name == "ev":
            try:
                writer.insert_one({"written": "by the application"})
                acknowledged.append(True)
            except WriteError as refused:  # the collection is closed to writes: nothing written
                assert refused.code == 121
                acknowledged.append(False)
        return real_drop(self, name, *args, **kwargs)

    monkeypatch.setattr(Database, "drop_collection", drop_after_a_concurrent_write)
    run("down", "--steps", "1")
    assert acknowledged == [False]  # fixed: refused while closed, never acknowledged then dropped
    assert real_db["ev"].count_documents({}) == 0


# ---------------------------------------------------------------------------------------------
# check / plan


def test_check_plan_and_status_create_nothing_on_an_empty_database(
    run: Any, project: Path, real_db: Database[Any], mongo_client: MongoClient[dict[str, Any]]
) -> None:
    """Holds: on a database that does not exist, with two declared collections, the read-only
    commands create no database, collection, index or lock."""
    write_schema(
        project / "schema", {"collection": "ev", "version": 1, "validator": OBJECT_X_INT, "indexes": []}
    )
    before = set(mongo_client.list_database_names())
    run("check", code=4)
    run("check", "--json", code=4)
    run("plan", code=4)  # the pending migrations do not build ev
    run("plan", "--json", code=4)
    run("status")
    assert set(mongo_client.list_database_names()) == before
    assert real_db.list_collection_names() == []


def test_plan_counts_the_bots_expired_records_as_up_then_deletes_them(
    run: Any, project: Path, real_db: Database[Any]
) -> None:
    """Holds: mid-adoption (the bot's string dates, not yet converted), ``plan`` counts the
    records the TTL deletes at once on the converted state: the number ``up`` then loses."""
    from tests.migration_fixtures import LEGACY_NOW, create_bot_collection

    kinds = create_bot_collection(real_db, 200, now=LEGACY_NOW)
    data = json.loads(run("plan", "--json", code=3).stdout)
    costs = data["collections"][0]["costs"]
    assert costs["ttl_deletes_at_once:expires_at_1"] == kinds["expired"]
    run("up")
    deadline = time.monotonic() + 30
    while real_db["user_files"].count_documents({}) > 200 - kinds["expired"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert real_db["user_files"].count_documents({}) == 200 - kinds["expired"]


def test_plan_counts_what_a_new_clustered_collection_ttl_deletes_at_once(
    run: Any, project: Path, real_db: Database[Any]
) -> None:
    """A clustered collection whose declared TTL (``options.expire_after_seconds``) is set by the
    generated migration (``collMod``, in place): every record whose ``_id`` date is past goes
    at the monitor's next pass, but ``plan`` shows only ``~ option expireAfterSeconds: None ->
    60`` with no cost, where a TTL index gets "N record(s) already past it"."""
    import datetime as dt

    v1 = {"collection": "ev", "version": 1, "indexes": [], "options": {"clustered": True}}
    write_schema(project / "schema", v1)
    run("new", "ev", "--autogenerate")
    run("up")
    real_db["ev"].insert_many([{"_id": dt.datetime(2000, 1, 1, second=n)} for n in range(5)])
    write_schema(
        project / "schema", {**v1, "version": 2, "options": {"clustered": True, "expire_after_seconds": 60}}
    )
    run("new", "ttl", "--autogenerate")
    data = json.loads(run("plan", "--json", code=3).stdout)
    (entry,) = [c for c in data["collections"] if c["collection"] == "ev"]
    assert entry["changes"] == ["~ option expireAfterSeconds: None -> 60"]
    assert 5 in entry["costs"].values(), entry  # {} : the 5 records deleted at once go unmentioned


# ---------------------------------------------------------------------------------------------
# Hostile schema directories


@pytest.mark.parametrize(
    ("file_name", "text", "message"),
    [
        ("ev.v1.yml", "collection: ev\nversion: 1\nindexes: []\n", "ev.v1.yml: schema files are named"),
        ("ev.v0.yaml", "collection: ev\nversion: 0\nindexes: []\n", "ev.v0.yaml: schema files are named"),
        ("ev.v01.yaml", "collection: ev\nversion: 1\nindexes: []\n", "ev.v01.yaml: schema files are named"),
        ("system.x.v1.yaml", "collection: system.x\nversion: 1\nindexes: []\n", "system.x.v1.yaml"),
        ("ev.v1.yaml", "collection: ev\nversion: 1\nindexes: []\nindexes: []\n", "'indexes' is given twice"),
        ("ev.v1.yaml", "collection: zz\nversion: 1\nindexes: []\n", "ev.v1.yaml: declares zz v1"),
        ("ev.v1.yaml", "collection: ev\nversion: 2\nindexes: []\n", "ev.v1.yaml: declares ev v2"),
        ("ev.v1.yaml", b"collection: ev\xff\nversion: 1\nindexes: []\n", "ev.v1.yaml: not UTF-8 text"),
        ("ev.v1.yaml", "a: &a [x, x]\nb: [*a, *a]\n", "aliases (*name) are not allowed"),
        ("ev.v1.yaml", "validator: " + "[" * 5000 + "]" * 5000 + "\n", "ev.v1.yaml: not valid YAML"),
        ("ev.v1.yaml", "", "ev.v1.yaml: expected a mapping"),
    ],
)
def test_a_bad_schema_file_is_exit_2_naming_it(
    run: Any, project: Path, file_name: str, text: str | bytes, message: str
) -> None:
    """Holds: each of these is exit 2 with a message naming the file, no traceback."""
    path = project / "schema" / file_name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    for command in (["check"], ["plan"], ["new", "x", "--autogenerate"]):
        result = run(*command, code=2)
        assert message in result.output, (command, result.output)


@pytest.mark.parametrize(
    "json_schema",
    ["{properties: [1]}", "{bsonType: 5}", "{bsonType: [[a]]}"],
)
def test_a_malformed_json_schema_is_exit_2_naming_the_file(run: Any, project: Path, json_schema: str) -> None:
    """``properties: [1]`` -> ``AttributeError: 'list' object has no attribute 'items'``;
    ``bsonType: 5`` -> ``TypeError: 'int' object is not iterable``; ``bsonType: [[a]]`` ->
    ``TypeError: unhashable type``: ``_validate_rule`` assumes the shapes it checks. ``check``
    exits 1 with a traceback instead of 2 naming the file."""
    (project / "schema" / "ev.v1.yaml").write_text(
        f"collection: ev\nversion: 1\nindexes: []\nvalidator: {{$jsonSchema: {json_schema}}}\n"
    )
    result = run("check", code=2)
    assert "ev.v1.yaml" in result.output


# ---------------------------------------------------------------------------------------------
# The generated file itself


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ruff", *args], capture_output=True, text=True, timeout=120)


def test_a_windows_schema_path_generates_importable_code(run: Any, project: Path) -> None:
    """The module docstring quotes the schema directory as given, unescaped: on Windows
    ``--schema C:\\Users\\me\\schema`` puts ``\\U`` in a normal string literal, a SyntaxError
    ("truncated \\UXXXXXXXX escape"); ``\\s`` and the like are invalid escapes (ruff W605).
    Reproduced on Linux with a directory whose name holds the same backslashes."""
    write_schema(project / "schema", {"collection": "ev", "version": 1, "indexes": []})
    (project / "schema").rename(project / "my\\Users\\schema")
    environ = {"MONGODB_URI": "mongodb://127.0.0.1:1", "MONGODB_DB": "unused"}
    scratch = os.environ.get("USERFILES_SCRATCH_URI")
    result = CliRunner().invoke(
        cli,
        ["--schema", "my\\Users\\schema", "--migrations", "migrations", "new", "x", "--autogenerate"]
        + (["--scratch-uri", scratch] if scratch else []),
        obj=State(environ=environ, cwd=project),
    )
    assert result.exit_code == 0, result.output
    compile(generated(project), "0005_x.py", "exec")


def test_a_migration_of_manual_steps_only_passes_ruff(run: Any, project: Path) -> None:
    """A unique index whose keys change is the only difference: every statement of ``up`` is
    a comment, ``down`` is ``return None``, yet ``from userfiles_db.migrate import steps`` is
    written: ``ruff check`` fails with F401 on the generated file."""
    v1: dict[str, Any] = {
        "collection": "ev",
        "version": 1,
        "indexes": [{"name": "a_1", "keys": [["a", 1]], "unique": True}],
    }
    write_schema(project / "schema", v1)
    run("new", "ev", "--autogenerate")
    write_schema(
        project / "schema",
        {**v1, "version": 2, "indexes": [{"name": "a_1", "keys": [["a", 1], ["b", 1]], "unique": True}]},
    )
    run("new", "keys", "--autogenerate")
    path = sorted((project / "migrations").glob("0006_*.py"))[-1]
    assert 'MANUAL: list[str] = ["ev index a_1"]' in path.read_text()
    done = ruff("check", "--isolated", str(path))
    assert done.returncode == 0, done.stdout


def test_a_manual_step_on_an_index_named_with_a_line_separator_stays_one_statement(
    run: Any, project: Path
) -> None:
    """``_commented`` splits statements with ``str.splitlines``, which also splits at U+2028,
    U+2029 and U+0085 (left raw by ``json.dumps(ensure_ascii=False)``): the commented
    ``steps.drop_index(db, "ev", "a<U+2028>b")`` is cut in two, a character is lost, and the
    file fails ``ruff format --check`` (a trailing-space comment line). Uncommented as the
    comment says ("then run:"), the statement is no longer the one to run."""
    name = "a\u2028b"
    v1 = {"collection": "ev", "version": 1, "indexes": [{"name": name, "keys": [["a", 1]], "unique": True}]}
    write_schema(project / "schema", v1)
    # Fixed at the source: an index name must be printable (no line or paragraph separator).
    result = run("new", "ev", "--autogenerate", code=2)
    assert "'name' must be a non-empty printable string" in result.output


# ---------------------------------------------------------------------------------------------
# Steps that report success short of the declared state


def test_a_generated_ensure_collection_refuses_a_live_collection_with_other_options(
    run: Any, project: Path, real_db: Database[Any]
) -> None:
    """The declared ``ev`` has default options, so the generated step is
    ``steps.ensure_collection(db, "ev")`` (options ``None``): when ``ev`` already exists on the
    target (capped, made by hand or by the application), it answers "exists" and ``up``
    succeeds, while ``check`` then reports ``ev option capped: declared None, live {...}``.
    With declared options the same step raises SchemaStepConflict: plain options should be
    compared too, so ``up`` fails naming the difference rather than reporting success."""
    write_schema(project / "schema", {"collection": "ev", "version": 1, "indexes": []})
    run("new", "ev", "--autogenerate")
    real_db.create_collection("ev", capped=True, size=4096)
    result = run("up", code=None)
    assert result.exit_code != 0, result.output
    assert "capped" in result.output


def test_a_schema_file_that_is_not_a_regular_file_is_refused(mongod: LocalMongod, project: Path) -> None:
    """``ev.v1.yaml`` as a named pipe: ``check`` blocks in ``read_text`` forever (killed here
    after 20 s); a symlink to ``/dev/zero`` reads until memory runs out. A schema file that is
    not a regular file (or is absurdly large) should be exit 2 naming it."""
    os.mkfifo(project / "schema" / "ev.v1.yaml")
    environ = {**os.environ, "MONGODB_URI": mongod.uri, "MONGODB_DB": "t_fifo"}
    command = [sys.executable, str(REPO / "migrate.py"), "--schema", "schema", "check"]
    try:
        done = subprocess.run(command, cwd=project, env=environ, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("check did not finish in 20 s")
    assert done.returncode == 2, done.stderr
    assert "ev.v1.yaml" in done.stderr
