"""Faults and concurrency against generated migrations (``new --autogenerate``), on the real server.

Every runner is a real ``migrate.py`` process; faults are real (SIGKILL, SIGSTOP, a concurrent
writer process). Where a fault has to land between two given server calls, the process runs
``migrate.py``'s ``main`` through a tiny wrapper that SIGKILLs itself at that call (``KILLER``):
no step is replaced, the kill is real. The two findings (a collection left closed to writes) are
fixed; the other tests show a guarantee that holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.migration_fixtures import schema_project, write_schema
from userfiles_db.local_server import LocalMongod

REPO = Path(__file__).resolve().parent.parent
MIGRATE = str(REPO / "migrate.py")
TIMEOUT = 60

# Runs migrate.py's main, and SIGKILLs itself at a chosen pymongo call (KILL_AT):
#   drop               - down's drop_collection_if_empty, after its collMod closed the collection
#   close_after_write  - a record lands between its count and its collMod (a writer racing it),
#                        then the collMod runs and the process dies before reading it back
KILLER = """
import os, signal, sys
from pymongo.synchronous.database import Database

point = os.environ["KILL_AT"]
target = os.environ.get("KILL_COLLECTION", "events")
original_drop, original_command = Database.drop_collection, Database.command


def drop_collection(self, name, *args, **kwargs):
    if point == "drop" and name == target:
        os.kill(os.getpid(), signal.SIGKILL)
    return original_drop(self, name, *args, **kwargs)


def command(self, command, value=1, *args, **kwargs):
    closing = command == "collMod" and value == target and kwargs.get("validator") == {"$expr": False}
    if closing and point == "close_after_write":
        self[target].insert_one({"written": "between the count and the close"})
    result = original_command(self, command, value, *args, **kwargs)
    if closing and point == "close_after_write":
        os.kill(os.getpid(), signal.SIGKILL)
    return result


Database.drop_collection, Database.command = drop_collection, command
from userfiles_db.cli import main

sys.argv = ["migrate.py", *sys.argv[1:]]
main()
"""

# A writer process: inserts a record, then deletes it, forever; logs each acknowledged step.
WRITER = """
import os, sys, time
from pymongo import MongoClient
from pymongo.errors import PyMongoError

client = MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)
collection = client[sys.argv[2]][sys.argv[3]]
log = open(sys.argv[4], "a", buffering=1)
n = 0
while True:
    n += 1
    try:
        collection.insert_one({"_id": n, "a": n, "b": n})
    except PyMongoError:
        time.sleep(0.001)
        continue
    log.write(f"inserted {n}\\n")
    if n % 3:  # two in three are deleted again: the collection is often empty
        collection.delete_one({"_id": n})
        log.write(f"deleted {n}\\n")
"""


def events(version: int, indexes: int, validator: bool = False) -> dict[str, Any]:
    document: dict[str, Any] = {"collection": "events", "version": version}
    if validator:
        document["validator"] = {"$jsonSchema": {"bsonType": "object"}}
    document["indexes"] = [{"name": f"f{i}_1", "keys": [[f"f{i}", 1]]} for i in range(indexes)]
    return document


@pytest.fixture
def project(tmp_path: Path) -> Path:
    schema_project(tmp_path)
    (tmp_path / "killer.py").write_text(KILLER)
    (tmp_path / "writer.py").write_text(WRITER)
    return tmp_path


class Cli:
    def __init__(self, uri: str, db: str, project: Path, where: tuple[str, ...] | None = None) -> None:
        self.uri, self.db, self.project = uri, db, project
        self.where = ("--schema", "schema", "--migrations", "migrations") if where is None else where

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ, "MONGODB_URI": self.uri, "MONGODB_DB": self.db, "USERFILES_SCRATCH_URI": self.uri,
            "USERFILES_LOCK_LEASE_SECONDS": "1", **extra,
        }  # fmt: skip

    def argv(self, *args: str, script: str = MIGRATE) -> list[str]:
        return [sys.executable, script, *self.where, *args]

    def start(self, *args: str, script: str = MIGRATE, **extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args, script=script), cwd=self.project, env=self.env(**extra), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def __call__(self, *args: str, code: int | None = 0, **extra: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args), cwd=self.project, env=self.env(**extra), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT,
        )  # fmt: skip
        if code is not None:
            assert done.returncode == code, f"{args}: exit {done.returncode}\n{done.stdout}"
        return done

    def killed_at(self, point: str, *args: str) -> str:
        process = self.start(*args, script=str(self.project / "killer.py"), KILL_AT=point)
        out, _ = process.communicate(timeout=TIMEOUT)
        assert process.returncode == -signal.SIGKILL, out
        return out


@pytest.fixture
def run(mongod: LocalMongod, real_db: Database[Any], project: Path) -> Cli:
    return Cli(mongod.uri, real_db.name, project)


def kill_on_line(process: subprocess.Popen[str], marker: str) -> list[str]:
    """Read ``process``'s output until a line contains ``marker``, then SIGKILL it."""
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + TIMEOUT
    for line in process.stdout:
        seen.append(line)
        if marker in line:
            break
        assert time.monotonic() < deadline, "".join(seen)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=TIMEOUT)
    return seen


def closed(db: Database[Any], name: str) -> bool:
    found = list(db.list_collections(filter={"name": name}))
    return bool(found) and found[0].get("options", {}).get("validator") == {"$expr": False}


def generate(run: Cli, slug: str, *documents: dict[str, Any]) -> Path:
    write_schema(run.project / "schema", *documents)
    out = run("new", slug, "--autogenerate").stdout
    assert "Created" in out, out
    return run.project / "migrations"


# -- 4. drop_collection_if_empty killed between its collMod and its drop ---------------------------


def test_up_after_down_killed_between_close_and_drop_reopens_the_collection(
    run: Cli, real_db: Database[Any]
) -> None:
    generate(run, "events", events(1, 2))
    run("up")
    run.killed_at("drop", "down", "--steps", "1")
    assert closed(real_db, "events")  # the state the kill leaves
    time.sleep(1.2)  # the dead runner's lease
    run("up")
    assert not closed(real_db, "events"), "up exited 0 and left every write refused"
    run("check")


def test_down_again_after_down_killed_between_close_and_drop_drops_the_collection(
    run: Cli, real_db: Database[Any]
) -> None:
    generate(run, "events", events(1, 2))
    run("up")
    run.killed_at("drop", "down", "--steps", "1")
    time.sleep(1.2)
    run("down", "--steps", "1")
    assert "events" not in real_db.list_collection_names()
    run("up")
    run("check")


def test_up_after_down_killed_between_close_and_drop_reopens_a_validated_collection(
    run: Cli, real_db: Database[Any]
) -> None:
    # With a declared validator the re-applied ensure_validator happens to reopen it.
    generate(run, "events", events(1, 2, validator=True))
    run("up")
    run.killed_at("drop", "down", "--steps", "1")
    time.sleep(1.2)
    run("up")
    assert not closed(real_db, "events")
    run("check")


def test_down_again_after_a_kill_with_a_record_in_the_closed_collection_reopens_it(
    run: Cli, real_db: Database[Any]
) -> None:
    generate(run, "events", events(1, 2))
    run("up")
    run.killed_at("close_after_write", "down", "--steps", "1")
    assert closed(real_db, "events")
    time.sleep(1.2)
    out = run("down", "--steps", "1").stdout
    assert "kept collection events" in out
    assert real_db["events"].count_documents({}) == 1  # no record lost: that part holds
    assert not closed(real_db, "events"), "down exited 0 and left every write refused"


# -- 4. drop_collection_if_empty under a real concurrent writer -----------------------------------


def test_down_racing_a_real_writer_loses_no_acknowledged_record(
    run: Cli, real_db: Database[Any], tmp_path: Path
) -> None:
    generate(run, "events", events(1, 2))
    log = tmp_path / "writer.log"
    writer = subprocess.Popen(
        [sys.executable, str(run.project / "writer.py"), run.uri, run.db, "events", str(log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(4):
            run("up")
            run("down", "--steps", "1")
            assert not closed(real_db, "events")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=TIMEOUT)
    inserted: set[int] = set()
    for line in log.read_text().splitlines():
        what, n = line.split()
        (inserted.add if what == "inserted" else inserted.discard)(int(n))
    inserted.discard(max(inserted, default=0))  # the last one may be mid-delete when killed
    live = {d["_id"] for d in real_db["events"].find({}, {"_id": 1})}
    assert inserted <= live, f"acknowledged records lost: {sorted(inserted - live)[:10]}"
    assert not closed(real_db, "events")


# -- 1. kill -9 during a generated migration's index builds, then plain up / down ------------------


@pytest.fixture
def loaded(run: Cli, real_db: Database[Any]) -> Cli:
    """events v1 applied (no index), ~200k small records, v2 declaring 6 indexes generated."""
    generate(run, "events_v1", events(1, 0))
    run("up")
    batch = [{f"f{i}": (n * (i + 7)) % 100_003 for i in range(6)} for n in range(20_000)]
    for _ in range(10):
        real_db["events"].insert_many([dict(d) for d in batch], ordered=False)
    generate(run, "events_v2", events(2, 6))
    return run


def test_up_killed_between_index_builds_resumes_by_itself(loaded: Cli, real_db: Database[Any]) -> None:
    process = loaded.start("up")
    kill_on_line(process, "create index f1_1")
    assert (real_db["migrations_changelog"].find_one({"_id": "0006_events_v2"}) or {}).get(
        "state"
    ) == "applying"
    time.sleep(1.2)
    out = loaded("up").stdout
    assert "resuming" in out
    loaded("check")
    assert real_db["events"].estimated_document_count() == 200_000


def test_down_killed_between_index_drops_continues_and_up_again(loaded: Cli, real_db: Database[Any]) -> None:
    loaded("up")
    process = loaded.start("down", "--steps", "1")
    kill_on_line(process, "drop index")
    time.sleep(1.2)
    loaded("down", "--steps", "1")
    assert set(real_db["events"].index_information()) == {"_id_"}
    loaded("check", code=4)
    loaded("up")
    loaded("check")


def test_up_killed_mid_down_re_applies(loaded: Cli, real_db: Database[Any]) -> None:
    loaded("up")
    process = loaded.start("down", "--steps", "1")
    kill_on_line(process, "drop index")
    time.sleep(1.2)
    loaded("up")
    loaded("check")


# -- 2. two runners at once -------------------------------------------------------------------


def test_two_ups_at_once_apply_the_generated_migration_once(loaded: Cli, real_db: Database[Any]) -> None:
    first, second = loaded.start("up"), loaded.start("up")
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], outs
    assert sum("0006_events_v2: Schema change" in out for out in outs) == 1, outs
    loaded("check")


def test_a_down_racing_an_up_leaves_a_consistent_state(loaded: Cli, real_db: Database[Any]) -> None:
    up, down = loaded.start("up"), loaded.start("down", "--steps", "1")
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in (up, down)]
    assert [up.returncode, down.returncode] == [0, 0], outs
    state = {d["_id"]: d["state"] for d in real_db["migrations_changelog"].find()}
    assert set(state.values()) == {"applied"}, state
    code = 0 if "0006_events_v2" in state else 4
    loaded("check", code=code)


# -- 3. replica set: transactions auto ----------------------------------------------------------


def test_generated_migration_on_a_replica_set(replica_set: LocalMongod, project: Path) -> None:
    db = f"rs_{os.getpid()}_{time.monotonic_ns() % 10**6}"
    run = Cli(replica_set.uri, db, project)
    try:
        generate(run, "events", events(1, 3, validator=True))
        run("up")
        run("check")
        run("down", "--steps", "1")
        run("check", code=4)
        run("up")
        run("check")
        uri = replica_set.uri + ("&" if "?" in replica_set.uri else "?") + "readPreference=secondaryPreferred"
        Cli(uri, db, project)("check")
        Cli(uri, db, project)("plan")
    finally:
        client: MongoClient[dict[str, Any]]
        with MongoClient(replica_set.uri) as client:
            client.drop_database(db)


# -- 6. the bundled bot path ------------------------------------------------------------------


def test_bundled_bot_path_check_plan_and_autogenerate(run: Cli, real_db: Database[Any]) -> None:
    bot = Cli(run.uri, run.db, run.project, where=())
    bot("up")
    assert bot("check").stdout.splitlines()[-1] == "No drift: the collection matches the declared schema."
    assert "Pending: none" in bot("plan").stdout.splitlines()
    out = bot("check", "--json").stdout  # stderr is merged: the "Database ..." line comes first
    data = json.loads(out[out.index("{") :])
    assert list(data["collections"]) == ["user_files"]
    out = Cli(run.uri, run.db, run.project, where=("--migrations", "migrations"))(
        "new", "again", "--autogenerate"
    ).stdout
    assert "No changes" in out
    assert (
        sorted(p.name for p in (run.project / "migrations").glob("0*.py"))[-1] == "0004_enforce_validator.py"
    )


# -- 5. a runner stopped past its lease while another takes over --------------------------------


def test_a_runner_stopped_past_its_lease_writes_nothing_after_the_takeover(
    loaded: Cli, real_db: Database[Any]
) -> None:
    first = loaded.start("up")
    assert first.stdout is not None
    seen = []
    for line in first.stdout:
        seen.append(line)
        if "create index f1_1" in line:
            break
    first.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.0)  # past its 1 s lease
        taker = loaded("up")
        assert "resuming" in taker.stdout, taker.stdout
        loaded("check")
        # Drift the takeover's result, so a late write by the stopped runner would show.
        real_db["events"].drop_index("f5_1")
    finally:
        first.send_signal(signal.SIGCONT)
    out, _ = first.communicate(timeout=TIMEOUT)
    after = out.splitlines()
    assert first.returncode != 0, "".join(seen) + out
    assert not [line for line in after if "create index" in line or "applied (" in line], out
    assert "f5_1" not in real_db["events"].index_information(), (
        "the stopped runner wrote after losing the lease"
    )
    assert (real_db["migrations_changelog"].find_one({"_id": "0006_events_v2"}) or {}).get(
        "state"
    ) == "applied"
