"""Fault injection on a 3-member replica set (three mongod on loopback, fast elections): a
step-down and a killed primary during the adoption, with ``readPreference=secondary`` and
``w=1`` in the URI; a lagging secondary; no majority at all.

After each: every record equals the model of the conversion, each migration ran once, the
history says what happened, the exit codes are the documented ones.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.migration_fixtures import LEGACY_NOW, create_bot_collection, write_migration
from tests.test_migrate_faults import COUNTER, _model, changelog, counters
from userfiles_db.clock import UTC
from userfiles_db.local_server import LocalReplicaSet
from userfiles_db.migrate import EngineOptions, LockTimeout, Runner, discover, history
from userfiles_db.migrate.config import bundled_migrations
from userfiles_db.migrate.errors import EXIT_ERROR

pytestmark = pytest.mark.mongod

ROOT = Path(__file__).parent.parent
MIGRATE = str(ROOT / "migrate.py")
RECORDS = 10_000


@pytest.fixture(scope="module")
def rs() -> Iterator[LocalReplicaSet]:
    with LocalReplicaSet("rsfault") as replica_set:
        yield replica_set


@pytest.fixture
def client(rs: LocalReplicaSet) -> Iterator[MongoClient[dict[str, Any]]]:
    with rs.client() as connection:
        yield connection
    # Leave the set whole for the next test: every member running, a primary elected.
    for index, member in enumerate(rs.members):
        if member.process is None or member.process.poll() is not None:
            rs.restart(index)
    rs.wait_healthy()


@pytest.fixture
def db(client: MongoClient[dict[str, Any]]) -> Iterator[Database[Any]]:
    name = f"rs_{uuid.uuid4().hex[:12]}"
    yield client[name]
    client.drop_database(name)


def folder_with_adoption(tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    for stem in ("0001_create_user_files", "0002_adopt_legacy_records"):
        (folder / f"{stem}.py").write_text((bundled_migrations() / f"{stem}.py").read_text())
    write_migration(folder, "0003_count", COUNTER % {"stem": "0003_count"})
    return folder


def hostile_uri(rs: LocalReplicaSet) -> str:
    """The set's URI with what must not matter to the tool: secondary reads, w=1."""
    return rs.uri + "&readPreference=secondary&w=1"


def cli(uri: str, db: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": db}
    return subprocess.Popen(
        [sys.executable, MIGRATE, *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_until_converted(db: Database[Any], fraction: float, runner: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while db["user_files"].count_documents({"size": {"$exists": True}}) < fraction * RECORDS:
        assert runner.poll() is None, runner.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def finish_and_check(db: Database[Any], folder: Path, tmp_path: Path, uri: str,
                     runner: subprocess.Popen[str], before: dict[str, Any]) -> None:  # fmt: skip
    """The faulted run exits 0 (it rode out the failover), or 1 with a failure recorded as
    transient, which the next `up` resumes by itself; after that the state is exact."""
    output = runner.communicate(timeout=180)[0]
    for _retry in range(3):  # what a pipeline does on exit 1: run `up` again (no flags)
        assert runner.returncode in (0, EXIT_ERROR), output
        if runner.returncode == 0:
            break
        assert "the next `up` resumes it by itself" in output, output
        runner = cli(uri, db.name, tmp_path, "--migrations", str(folder), "up")
        output = runner.communicate(timeout=180)[0]
    assert runner.returncode == 0, output
    after = {d["file_id"]: d for d in db["user_files"].find({}, {"_id": 0})}
    assert after == before
    assert counters(db) == {"0003_count": 1}
    assert {k: v["state"] for k, v in changelog(db).items()} == {
        "0001_create_user_files": "applied", "0002_adopt_legacy_records": "applied", "0003_count": "applied",
    }  # fmt: skip
    applied = [e["migration"] for e in history(db, EngineOptions()) if e["event"] == "applied"]
    assert sorted(applied) == ["0001_create_user_files", "0002_adopt_legacy_records", "0003_count"]


def prepare(db: Database[Any], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    folder = folder_with_adoption(tmp_path)
    create_bot_collection(db, RECORDS, now=LEGACY_NOW)
    before = {d["file_id"]: _model(d) for d in db["user_files"].find({}, {"_id": 0})}
    # A lease longer than an election (about 1-2 s here): the runner keeps it through a failover.
    (tmp_path / "migrate.yaml").write_text(
        "lock_lease_seconds: 6\nlock_poll_seconds: 0.05\nmigration_options:\n  batch_size: 100\n"
    )
    return folder, before


def test_a_step_down_during_the_adoption(rs: LocalReplicaSet, db: Database[Any], tmp_path: Path) -> None:
    folder, before = prepare(db, tmp_path)
    runner = cli(hostile_uri(rs), db.name, tmp_path, "--migrations", str(folder), "up")
    wait_until_converted(db, 0.2, runner)
    old = rs.step_down(seconds=5)
    assert rs.primary_index(other_than=old) != old
    finish_and_check(db, folder, tmp_path, hostile_uri(rs), runner, before)


def test_a_killed_primary_during_the_adoption(rs: LocalReplicaSet, db: Database[Any], tmp_path: Path) -> None:
    folder, before = prepare(db, tmp_path)
    runner = cli(hostile_uri(rs), db.name, tmp_path, "--migrations", str(folder), "up")
    wait_until_converted(db, 0.2, runner)
    killed = rs.primary_index()
    rs.kill(killed)
    rs.primary_index(other_than=killed)  # a new primary is elected among the two left
    finish_and_check(db, folder, tmp_path, hostile_uri(rs), runner, before)


def test_a_lagging_secondary_never_makes_the_tool_apply_twice(
    rs: LocalReplicaSet, db: Database[Any], client: MongoClient[dict[str, Any]], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    for stem in ("0001_a", "0002_b"):
        write_migration(folder, stem, COUNTER % {"stem": stem})
    # Tag the members so the URI can send secondary reads to the one we freeze.
    config = client.admin.command("replSetGetConfig")["config"]
    for member in config["members"]:
        member["tags"] = {"name": f"m{member['_id']}"}
    config["version"] += 1
    client.admin.command("replSetReconfig", config)
    primary = rs.primary_index()
    lagging = next(i for i in range(3) if i != primary)
    uri = hostile_uri(rs) + f"&readPreferenceTags=name:m{lagging}"
    with rs.members[lagging]._direct_client(5000) as frozen:
        frozen.admin.command("fsync", lock=True)  # it stops applying the oplog: it lags
        try:
            (tmp_path / "migrate.yaml").write_text("lock_lease_seconds: 2\nlock_poll_seconds: 0.05\n")
            outputs = []
            for _ in range(3):
                run = cli(uri, db.name, tmp_path, "--migrations", str(folder), "up")
                outputs.append(run.communicate(timeout=120)[0])
                assert run.returncode == 0, outputs[-1]
            # The secondary the URI reads from has not seen any of it...
            assert frozen[db.name]["migrations_changelog"].count_documents({}) == 0
        finally:
            frozen.admin.command("fsyncUnlock")
    # ...yet each migration ran once: the tool read its changelog on the primary.
    assert "Applied 2 migration(s)." in outputs[0]
    assert all("Nothing to apply" in out for out in outputs[1:]), outputs
    assert counters(db) == {"0001_a": 1, "0002_b": 1}


def test_with_no_majority_up_waits_a_bounded_time_and_says_so(
    rs: LocalReplicaSet, db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_a", COUNTER % {"stem": "0001_a"})
    primary = rs.primary_index()
    killed = [index for index in range(3) if index != primary]
    lines: list[str] = []
    bounded = EngineOptions(lock_timeout_seconds=2, lock_poll_seconds=0.1, majority_timeout_seconds=1,
                            retry_seconds=2)  # fmt: skip
    try:
        for index in killed:
            rs.kill(index)
        started = time.monotonic()
        client: MongoClient[dict[str, Any]] = MongoClient(
            hostile_uri(rs), serverSelectionTimeoutMS=1000, tz_aware=True
        )
        with (
            client,
            pytest.raises(LockTimeout, match="no writable primary with a majority answered within 2 s"),
        ):
            Runner(client[db.name], discover(folder), bounded, report=lines.append).up()
        elapsed = time.monotonic() - started
    finally:
        for index in killed:
            rs.restart(index)
    assert elapsed < 60  # bounded (2 s of waiting, plus slack for a loaded machine)
    assert any(line.startswith("Waiting for a writable primary (majority)") for line in lines), lines


def test_a_waiting_runner_waits_through_an_election_instead_of_exiting(
    rs: LocalReplicaSet, db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_a", COUNTER % {"stem": "0001_a"})
    # Another runner's lease (as if it were alive) makes this one wait...
    db["migrations_lock"].insert_one(
        {
            "_id": "lock",
            "owner": "other",
            "host": "pod-1",
            "expires_at": dt.datetime.now(UTC) + dt.timedelta(seconds=2),
        }
    )
    lines: list[str] = []
    waiting = EngineOptions(lock_timeout_seconds=60, lock_poll_seconds=0.1, lock_lease_seconds=5)
    client: MongoClient[dict[str, Any]] = MongoClient(
        hostile_uri(rs), serverSelectionTimeoutMS=300, tz_aware=True
    )
    runner = Runner(client[db.name], discover(folder), waiting, report=lines.append)
    # ...and the primary is killed while it waits: for a few seconds there is no primary at all.
    killer = threading.Timer(0.5, lambda: rs.kill(rs.primary_index()))
    killer.start()
    try:
        assert runner.up().done == ["0001_a"]
    finally:
        killer.join()
        client.close()
    assert any(line.startswith("Waiting for the migration lock held by run other") for line in lines), lines
    assert any(line.startswith("Waiting for a writable primary") for line in lines), lines
    assert counters(db) == {"0001_a": 1}


def test_a_step_down_during_a_generated_migration_and_its_down(
    rs: LocalReplicaSet, db: Database[Any], tmp_path: Path
) -> None:
    """``new --autogenerate``'s migration (a collection, four index builds over 60,000 records)
    through a step-down in its ``up`` and another in its ``down``: each ends exact (no drift
    against the declared state, then none against the state before), every record kept."""
    from tests.migration_fixtures import write_schema
    from userfiles_db.migrate.autogen import generate, render
    from userfiles_db.migrate.drift import compare, live_collection
    from userfiles_db.schema import SchemaSet

    db["events"].insert_many([{"a": n, "b": n % 97, "c": str(n), "d": -n} for n in range(60_000)])
    before = live_collection(db, "events")
    declared = {
        "collection": "events", "version": 1,
        "indexes": [{"name": f"{f}_1", "keys": [[f, 1]]} for f in "abcd"],
    }  # fmt: skip
    schemas = SchemaSet.directory(write_schema(tmp_path / "schema", declared))
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "0001_events.py").write_text(
        render(
            generate(schemas, {"events": before}),
            migration_id="0001_events",
            created="now",
            replayed=[],
            schema_dir="schema",
        )
    )
    (tmp_path / "migrate.yaml").write_text("lock_lease_seconds: 6\nlock_poll_seconds: 0.05\n")

    def through_a_step_down(*args: str, until: Any) -> None:
        runner = cli(hostile_uri(rs), db.name, tmp_path, "--migrations", str(folder), *args)
        deadline = time.monotonic() + 60
        while not until() and runner.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runner.poll() is None, "the runner finished before the fault: no attack"
        rs.step_down(seconds=5)
        output = runner.communicate(timeout=180)[0]
        for _retry in range(3):  # a pipeline runs the same command again on exit 1
            if runner.returncode == 0:
                break
            assert runner.returncode == EXIT_ERROR, output
            runner = cli(hostile_uri(rs), db.name, tmp_path, "--migrations", str(folder), *args)
            output = runner.communicate(timeout=180)[0]
        assert runner.returncode == 0, output

    through_a_step_down("up", until=lambda: "a_1" in db["events"].index_information())
    assert compare(schemas.load("events"), live_collection(db, "events")) == []
    through_a_step_down("down", "--steps", "1", until=lambda: "d_1" not in db["events"].index_information())
    assert live_collection(db, "events") == before
    assert db["events"].count_documents({}) == 60_000
