"""Fault injection on a real server: runners paused past their lease, killed at random points,
unlocked while alive, stopped by SIGTERM, crashing servers, migrations that exit.

After each fault: every migration's side effect happened exactly once (marker migrations $inc a
counter), records equal a model of the conversion, the history says what happened, and the exit
codes are the documented ones. Bounded: small leases, small collections.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.migration_fixtures import LEGACY_NOW, create_bot_collection, write_migration
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import (
    EngineOptions,
    InterruptedMigration,
    LockLost,
    MigrationError,
    Runner,
    discover,
    history,
    status,
    unlock,
)
from userfiles_db.migrate.config import bundled_migrations
from userfiles_db.migrate.errors import (
    EXIT_ERROR,
    EXIT_LOCK_TIMEOUT,
    EXIT_NEEDS_ATTENTION,
    EXIT_TERMINATED,
    Terminated,
)
from userfiles_db.migrate.lock import LeaseLock

ROOT = Path(__file__).parent.parent
MIGRATE = str(ROOT / "migrate.py")

COUNTER = """
def up(db: Any) -> None:
    db["counters"].update_one({"_id": "%(stem)s"}, {"$inc": {"n": 1}}, upsert=True)

def down(db: Any) -> None:
    db["counters"].update_one({"_id": "%(stem)s"}, {"$inc": {"n": -1}}, upsert=True)
"""

# Resumable: waits for a "go" document (so a test controls when it ends), then sets its marker.
WAITS_FOR_GO = """
import time

RESUMABLE = %(resumable)s

def up(db: Any) -> None:
    while not db["switch"].find_one({"_id": "go"}):
        time.sleep(0.05)
    db["counters"].update_one({"_id": "%(stem)s"}, {"$inc": {"n": 1}}, upsert=True)

def down(db: Any) -> None:
    pass
"""


def counter_migration(folder: Path, stem: str) -> None:
    write_migration(folder, stem, COUNTER % {"stem": stem})


def waiting_migration(folder: Path, stem: str, *, resumable: bool) -> None:
    write_migration(folder, stem, WAITS_FOR_GO % {"stem": stem, "resumable": resumable})


def counters(db: Database[Any]) -> dict[str, int]:
    return {d["_id"]: d["n"] for d in db["counters"].find()}


def options(**overrides: Any) -> EngineOptions:
    settings: dict[str, Any] = {
        "lock_lease_seconds": 1.0,
        "lock_poll_seconds": 0.05,
        "lock_timeout_seconds": 30,
    }
    settings.update(overrides)
    return EngineOptions(**settings)


def events(db: Database[Any], run_id: str | None = None) -> list[tuple[str, str | None]]:
    return [(e["event"], e.get("migration")) for e in history(db, EngineOptions(), run_id=run_id)]


def cli(uri: str, db: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": db}
    return subprocess.Popen(
        [sys.executable, MIGRATE, *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def fault_runner(uri: str, db: str, folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fault_runner", uri, db, str(folder), *args], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stopped(process: subprocess.Popen[str]) -> bool:
    """Whether ``process`` is stopped (SIGSTOP): state T in /proc."""
    with open(f"/proc/{process.pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def changelog(db: Database[Any]) -> dict[str, dict[str, Any]]:
    return {d["_id"]: d for d in db["migrations_changelog"].find()}


# -- a paused runner, an unlocked runner: the lease is a fence -------------------------------------


def test_a_runner_paused_past_its_lease_at_a_boundary_does_not_apply_again(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    for stem in ("0001_a", "0002_b", "0003_c"):
        counter_migration(folder, stem)
    paused = fault_runner(mongod.uri, real_db.name, folder, "--lease", "1", "--pause-after", "0001_a")
    wait_for(lambda: stopped(paused) or paused.poll() is not None, "the runner to pause itself")
    assert paused.poll() is None, paused.communicate()[0]
    first = changelog(real_db)["0001_a"]["run_id"]

    # Its lease runs out; a second runner takes over and applies the rest.
    second = Runner(real_db, discover(folder), options())
    assert second.up().done == ["0002_b", "0003_c"]

    paused.send_signal(signal.SIGCONT)
    output = paused.communicate(timeout=60)[0]
    assert paused.returncode == EXIT_ERROR, output
    assert "no longer holds the migration lock" in output
    assert "0002_b: " not in output  # it never started the next migration
    assert counters(real_db) == {"0001_a": 1, "0002_b": 1, "0003_c": 1}
    assert {k: v["run_id"] for k, v in changelog(real_db).items()} == {
        "0001_a": first, "0002_b": second.run_id, "0003_c": second.run_id,
    }  # fmt: skip
    assert events(real_db, first) == [
        ("run_started", None), ("started", "0001_a"), ("applied", "0001_a"), ("lock_lost", None),
        ("run_finished", None),
    ]  # fmt: skip
    assert history(real_db, EngineOptions(), run_id=first)[-1]["exit_code"] == EXIT_ERROR


def test_unlock_refuses_a_live_lease_and_a_forced_unlock_stops_the_holder(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    waiting_migration(folder, "0001_wait", resumable=True)
    counter_migration(folder, "0002_count")
    (tmp_path / "migrate.yaml").write_text("lock_lease_seconds: 1\nlock_poll_seconds: 0.05\n")
    holder = cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up")
    wait_for(lambda: "0001_wait" in changelog(real_db), "the holder to start 0001_wait")
    run_a = changelog(real_db)["0001_wait"]["run_id"]

    refused = subprocess.run(
        [sys.executable, MIGRATE, "unlock"], cwd=tmp_path, text=True, capture_output=True, timeout=60,
        env={**os.environ, "MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name},
    )  # fmt: skip
    assert refused.returncode == EXIT_LOCK_TIMEOUT, refused.stderr
    assert f"the migration lock is live: held by run {run_a} on host" in refused.stderr
    assert real_db["migrations_lock"].count_documents({"owner": run_a}) == 1

    forced = subprocess.run(
        [sys.executable, MIGRATE, "unlock", "--force"], cwd=tmp_path, text=True, capture_output=True,
        timeout=60, env={**os.environ, "MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name},
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith(f"Released the lock of run {run_a}")

    real_db["switch"].insert_one({"_id": "go"})  # the holder's migration ends now
    output = holder.communicate(timeout=60)[0]
    assert holder.returncode == EXIT_ERROR, output
    assert "no longer holds the migration lock" in output
    assert "0002_count" not in output
    assert changelog(real_db)["0001_wait"]["state"] == "applying"  # never overwritten as applied

    # The next runner resumes the resumable migration and applies the rest, once.
    after = Runner(real_db, discover(folder), options())
    assert after.up().done == ["0001_wait", "0002_count"]
    assert counters(real_db) == {"0001_wait": 2, "0002_count": 1}  # 0001 ran twice: it is resumable
    assert ("lock_lost", None) in events(real_db, run_a)
    unlocked = [e for e in history(real_db, EngineOptions()) if e["event"] == "unlocked"]
    assert [(e["holder"], e["forced"]) for e in unlocked] == [(run_a, True)]
    assert ("resumed", "0001_wait") in events(real_db, after.run_id)


# -- kill -9 at random points -----------------------------------------------------------------


def _model(legacy: dict[str, Any]) -> dict[str, Any]:
    """What the adoption makes of a legacy record (naive UTC strings, milliseconds)."""

    def date(text: str | None) -> dt.datetime | None:
        if text is None:
            return None
        value = dt.datetime.fromisoformat(text)
        return value.replace(microsecond=value.microsecond // 1000 * 1000)

    record = {k: v for k, v in legacy.items() if k not in ("uploaded_at", "file_size")}
    record.update(size=legacy["file_size"], created_at=date(legacy["uploaded_at"]),
                  expires_at=date(legacy["expires_at"]))  # fmt: skip
    return record


SLOW_COUNTER = """
import time

def up(db: Any) -> None:
    time.sleep(0.2)
    db["counters"].update_one({"_id": "%(stem)s"}, {"$inc": {"n": 1}}, upsert=True)
    time.sleep(0.3)

def down(db: Any) -> None:
    pass
"""

SLOW_RESUMABLE = """
import time

RESUMABLE = True

def up(db: Any) -> None:
    for step in range(8):
        time.sleep(0.1)
        db["steps"].update_one({"_id": step}, {"$set": {"done": True}}, upsert=True)

def down(db: Any) -> None:
    pass
"""


def test_runners_killed_at_random_points_lose_nothing_and_apply_each_migration_once(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    for stem in ("0001_create_user_files", "0002_adopt_legacy_records"):  # resumable (bundled)
        (folder / f"{stem}.py").write_text((bundled_migrations() / f"{stem}.py").read_text())
    write_migration(folder, "0003_count", SLOW_COUNTER % {"stem": "0003_count"})  # not resumable
    write_migration(folder, "0004_steps", SLOW_RESUMABLE)
    create_bot_collection(real_db, 20_000, now=LEGACY_NOW)
    before = {d["file_id"]: _model(d) for d in real_db["user_files"].find({}, {"_id": 0})}
    (tmp_path / "migrate.yaml").write_text(
        "lock_lease_seconds: 0.5\nlock_poll_seconds: 0.05\nmigration_options:\n  batch_size: 100\n"
    )
    converted = real_db["user_files"]
    rng = random.Random(20261125)
    rng_fraction = [0.0]
    points: dict[str, Callable[[], bool]] = {
        "mid-adoption": lambda: (
            converted.count_documents({"size": {"$exists": True}}) >= rng_fraction[0] * 20_000
        ),
        "in 0003_count": lambda: "0003_count" in changelog(real_db),
        "in 0004_steps": lambda: real_db["steps"].count_documents({}) >= 2,
    }
    runs, ends, seen = 0, [], []  # ends: the exit codes of the runs that were not killed
    for kind in ["mid-adoption", "mid-adoption", "in 0003_count", "in 0004_steps"]:
        rng_fraction[0] = rng.uniform(0.05, 0.9)
        runner = cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up")
        runs += 1
        deadline = time.monotonic() + 60
        while not points[kind]() and runner.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        runner.send_signal(signal.SIGKILL)
        runner.communicate()
        records = changelog(real_db)
        seen.append({k: v["state"] for k, v in records.items() if v["state"] != "applied"})
        count = records.get("0003_count")
        if count is not None and count["state"] == "applying":
            # Killed inside the migration that is not resumable: the next `up` says a person
            # must look (exit 6) and does nothing; the person checks its effect and decides.
            blocked = cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up")
            output = blocked.communicate(timeout=60)[0]
            runs += 1
            assert blocked.returncode == EXIT_NEEDS_ATTENTION, output
            ends.append(EXIT_NEEDS_ATTENTION)
            assert "0003_count: applying since" in output
            assert "a person must look" in output
            person = Runner(real_db, discover(folder), options(lock_lease_seconds=0.5))
            if counters(real_db).get("0003_count") == 1:
                person.stamp("0003_count")
            else:
                person.up("0003_count", resume=True)
            runs += 1
            ends.append(0)
    # The kills did land inside migrations (what each left interrupted):
    assert {"0002_adopt_legacy_records": "applying"} in seen, seen
    final = cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up")
    output = final.communicate(timeout=120)[0]
    runs += 1
    assert final.returncode == 0, output
    ends.append(0)

    after = {d["file_id"]: d for d in real_db["user_files"].find({}, {"_id": 0})}
    assert after == before
    assert counters(real_db) == {"0003_count": 1}
    assert real_db["steps"].count_documents({"done": True}) == 8
    found = status(real_db, discover(folder), EngineOptions())
    assert [e.state for e in found.entries] == ["applied"] * 4
    log = history(real_db, EngineOptions())
    # Every run that got the lock says so (a run killed while starting or waiting for the lock
    # did nothing, and the history has nothing of it); every run that wrote anything is there,
    # and each run that was not killed has its end with its exit code.
    started = {e["run_id"] for e in log if e["event"] == "run_started"}
    assert len(ends) <= len(started) <= runs
    assert {e["run_id"] for e in log} | {r["run_id"] for r in changelog(real_db).values()} <= started
    assert sorted(e["exit_code"] for e in log if e["event"] == "run_finished") == sorted(ends)
    finished = [e for e in log if e["event"] in ("applied", "stamped") and e.get("migration") == "0003_count"]
    assert len(finished) == 1  # its effect is recorded exactly once, as applied or stamped
    assert real_db["migrations_lock"].count_documents({}) == 0


# -- concurrent runners -----------------------------------------------------------------------


def test_concurrent_runners_apply_each_migration_once_and_the_history_says_so(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    for stem in ("0001_a", "0002_b", "0003_c"):
        counter_migration(folder, stem)
    (tmp_path / "migrate.yaml").write_text("lock_lease_seconds: 1\nlock_poll_seconds: 0.05\n")
    runners = [cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up") for _ in range(4)]
    outputs = [p.communicate(timeout=120)[0] for p in runners]
    assert [p.returncode for p in runners] == [0] * 4, outputs
    assert counters(real_db) == {"0001_a": 1, "0002_b": 1, "0003_c": 1}
    log = history(real_db, EngineOptions())
    assert sorted(e["migration"] for e in log if e["event"] == "applied") == ["0001_a", "0002_b", "0003_c"]
    assert sum(e["event"] == "run_finished" and e["exit_code"] == 0 for e in log) == 4


# -- SIGTERM ----------------------------------------------------------------------------------


def test_sigterm_stops_a_resumable_migration_at_once_and_the_next_up_resumes_it(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    waiting_migration(folder, "0001_wait", resumable=True)
    counter_migration(folder, "0002_count")
    (tmp_path / "migrate.yaml").write_text("lock_lease_seconds: 1\nlock_poll_seconds: 0.05\n")
    runner = cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up")
    wait_for(lambda: "0001_wait" in changelog(real_db), "0001_wait to start")
    runner.send_signal(signal.SIGTERM)
    output = runner.communicate(timeout=60)[0]
    assert runner.returncode == EXIT_TERMINATED, output
    assert "stopped by SIGTERM during 0001_wait" in output
    assert real_db["migrations_lock"].count_documents({}) == 0  # released: no lease to wait out
    assert changelog(real_db)["0001_wait"]["state"] == "applying"
    run_id = changelog(real_db)["0001_wait"]["run_id"]
    assert events(real_db, run_id)[-2:] == [("interrupted", "0001_wait"), ("run_finished", None)]
    assert history(real_db, EngineOptions(), run_id=run_id)[-1]["exit_code"] == EXIT_TERMINATED

    real_db["switch"].insert_one({"_id": "go"})
    again = cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up")
    output = again.communicate(timeout=60)[0]
    assert again.returncode == 0, output
    assert counters(real_db) == {"0001_wait": 1, "0002_count": 1}


def test_sigterm_lets_a_non_resumable_migration_finish_then_stops(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    waiting_migration(folder, "0001_wait", resumable=False)
    counter_migration(folder, "0002_count")
    (tmp_path / "migrate.yaml").write_text("lock_lease_seconds: 1\nlock_poll_seconds: 0.05\n")
    runner = cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up")
    wait_for(lambda: "0001_wait" in changelog(real_db), "0001_wait to start")
    runner.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert runner.poll() is None  # still running its migration
    real_db["switch"].insert_one({"_id": "go"})
    output = runner.communicate(timeout=60)[0]
    assert runner.returncode == EXIT_TERMINATED, output
    assert "stopped by SIGTERM before 0002_count" in output
    assert {k: v["state"] for k, v in changelog(real_db).items()} == {"0001_wait": "applied"}
    assert counters(real_db) == {"0001_wait": 1}
    assert real_db["migrations_lock"].count_documents({}) == 0


# -- honest records -----------------------------------------------------------------------------


def test_a_migration_calling_sys_exit_is_recorded_failed_not_applied(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_exits", """
        import sys

        def up(db: Any) -> None:
            db["marks"].insert_one({"_id": "half"})
            sys.exit(0)

        def down(db: Any) -> None:
            pass
    """)  # fmt: skip
    with pytest.raises(
        MigrationError, match=r"0001_exits failed: SystemExit: the migration called sys\.exit\(0\)"
    ):
        Runner(real_db, discover(folder), options()).up()
    assert changelog(real_db)["0001_exits"]["state"] == "failed"
    with pytest.raises(InterruptedMigration) as info:
        Runner(real_db, discover(folder), options()).up()
    assert info.value.exit_code == EXIT_NEEDS_ATTENTION
    assert [e for e, _ in events(real_db)] == [
        "run_started", "started", "failed", "run_finished", "run_started", "run_finished",
    ]  # fmt: skip

    # Through migrate.py: a non-zero exit, not 0.
    host, port = real_db.client.address or ("127.0.0.1", 27017)
    env = {**os.environ, "MONGODB_URI": f"mongodb://{host}:{port}/?directConnection=true",
           "MONGODB_DB": real_db.name}  # fmt: skip
    done = subprocess.run([sys.executable, MIGRATE, "--migrations", str(folder), "up", "--resume"],
                          cwd=tmp_path, text=True, capture_output=True, timeout=60, env=env)  # fmt: skip
    assert done.returncode == EXIT_ERROR, done.stdout + done.stderr
    assert "recorded 'failed', not applied" in done.stderr


REVERT_FAILS = """
RESUMABLE = %(resumable)s

def up(db: Any) -> None:
    db["data"].update_many({}, {"$set": {"shape": "new"}})

def down(db: Any) -> None:
    db["data"].update_one({"_id": 1}, {"$set": {"shape": "old"}})
    raise RuntimeError("killed halfway through the revert")
"""


@pytest.mark.parametrize("resumable", [True, False])
def test_an_interrupted_down_is_recorded_and_up_knows(
    real_db: Database[Any], tmp_path: Path, resumable: bool
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_reshape", REVERT_FAILS % {"resumable": resumable})
    real_db["data"].insert_many([{"_id": 1}, {"_id": 2}])
    Runner(real_db, discover(folder), options()).up()
    with pytest.raises(MigrationError, match="It is recorded 'reverting'"):
        Runner(real_db, discover(folder), options()).down()
    found = status(real_db, discover(folder), EngineOptions())
    assert [(e.id, e.state) for e in found.entries] == [("0001_reshape", "reverting")]
    assert found.to_dict()["interrupted"][0]["resumable"] is resumable
    if resumable:  # `up --to` no longer says "nothing to apply": it re-applies it
        assert Runner(real_db, discover(folder), options()).up("0001_reshape").done == ["0001_reshape"]
        assert real_db["data"].count_documents({"shape": "new"}) == 2
    else:
        with pytest.raises(InterruptedMigration, match="0001_reshape: reverting since"):
            Runner(real_db, discover(folder), options()).up("0001_reshape")
    assert ("revert_started", "0001_reshape") in events(real_db)


CRASHES_THE_SERVER = """
RESUMABLE = True

def up(db: Any) -> None:
    if db["switch"].find_one({"_id": "crash"}):
        try:
            db.client.admin.command("shutdown", force=True)
        finally:
            pass
    db["counters"].update_one({"_id": "crash"}, {"$inc": {"n": 1}}, upsert=True)

def down(db: Any) -> None:
    pass
"""


def test_after_a_server_crash_the_message_says_the_true_state_and_the_lock_left(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_crash", CRASHES_THE_SERVER)
    dbpath = tmp_path / "data"
    with LocalMongod(dbpath) as server:
        client: MongoClient[dict[str, Any]] = server.client(serverSelectionTimeoutMS=200, tz_aware=True)
        db = client["crash"]
        db["switch"].insert_one({"_id": "crash"})
        quick = options(retry_seconds=0.5, lock_lease_seconds=0.5, majority_timeout_seconds=1)
        with pytest.raises(MigrationError) as info:
            Runner(db, discover(folder), quick).up()
        client.close()
    message = str(info.value)
    assert message.startswith("0001_crash failed: AutoReconnect")
    assert "still recorded 'applying', not 'failed'" in message
    assert "The next `up` resumes it by itself (it is resumable)" in message
    assert "left to expire on its own within 0.5 s" in message
    with LocalMongod(dbpath) as server, server.client(tz_aware=True) as client:
        db = client["crash"]
        assert changelog(db)["0001_crash"]["state"] == "applying"  # what the message said
        db["switch"].delete_many({})
        assert Runner(db, discover(folder), options()).up().done == ["0001_crash"]
        assert counters(db) == {"crash": 1}


# -- the lease's own faults ---------------------------------------------------------------------


def test_renewal_errors_count_a_holder_that_cannot_renew_for_a_lease_stops_trusting_it(
    tmp_path: Path,
) -> None:
    with LocalMongod(tmp_path / "data") as server:
        client: MongoClient[dict[str, Any]] = server.client(serverSelectionTimeoutMS=300)
        lock = LeaseLock(client["lease"], collection="migrations_lock", owner="me", host="h", lease_seconds=1)
        lock.acquire(5, 0.05, lambda line: None)
        server._kill()  # the server is gone: every renewal fails
        wait_for(lambda: lock.lost, "the renewer to give up after a whole lease", timeout=20)
        assert "could not be renewed for a whole lease" in lock.lost_reason
        with pytest.raises(LockLost, match="no longer holds the migration lock"):
            lock.check()
        assert lock.release(timeout=0.5) is False  # and it says the lease is left to expire
        client.close()


def test_on_a_replica_set_a_runner_whose_lock_was_taken_over_writes_nothing_more(
    replica_set: LocalMongod, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    waiting_migration(folder, "0001_wait", resumable=False)
    counter_migration(folder, "0002_count")
    with replica_set.client(tz_aware=True) as client:
        db = client[f"fence_{os.getpid()}"]
        client.drop_database(db.name)
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                Runner(db, discover(folder), options(lock_lease_seconds=30)).up()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        wait_for(lambda: "0001_wait" in changelog(db), "0001_wait to start")
        holder = changelog(db)["0001_wait"]["run_id"]
        unlock(db, EngineOptions(), force=True)
        intruder = LeaseLock(db, collection="migrations_lock", owner="intruder", host="h", lease_seconds=30)
        assert intruder.try_acquire()["owner"] == "intruder"
        db["switch"].insert_one({"_id": "go"})
        thread.join(60)
        assert isinstance(outcome[0], LockLost), outcome
        assert changelog(db)["0001_wait"]["state"] == "applying"  # not overwritten as applied
        assert changelog(db)["0001_wait"]["run_id"] == holder
        assert "0002_count" not in changelog(db)
        assert counters(db) == {"0001_wait": 1}
        client.drop_database(db.name)


def test_down_refuses_to_undo_around_a_half_applied_migration(real_db: Database[Any], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    counter_migration(folder, "0001_a")
    counter_migration(folder, "0002_b")
    Runner(real_db, discover(folder), options()).up("0001_a")
    real_db["migrations_changelog"].insert_one(
        {"_id": "0002_b", "state": "applying", "run_id": "dead", "host": "h", "checksum": "x"}
    )
    with pytest.raises(InterruptedMigration, match=r"0002_b: applying \(run dead\)") as info:
        Runner(real_db, discover(folder), options()).down()
    assert info.value.exit_code == EXIT_NEEDS_ATTENTION
    assert counters(real_db) == {"0001_a": 1}  # nothing undone


@pytest.mark.parametrize("raised", ["KeyboardInterrupt()", "GeneratorExit()", "BaseException('odd')"])
def test_a_migration_raising_a_base_exception_is_recorded_failed(
    real_db: Database[Any], tmp_path: Path, raised: str
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_odd", f"""
        def up(db: Any) -> None:
            raise {raised}

        def down(db: Any) -> None:
            pass
    """)  # fmt: skip
    with pytest.raises(MigrationError, match="recorded 'failed', not applied") as info:
        Runner(real_db, discover(folder), options()).up()
    assert info.value.exit_code == EXIT_ERROR
    assert changelog(real_db)["0001_odd"]["state"] == "failed"
    assert real_db["migrations_lock"].count_documents({}) == 0


def test_sigterm_while_waiting_for_the_lock_stops_at_once_writing_nothing(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    counter_migration(folder, "0001_a")
    live = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
    real_db["migrations_lock"].insert_one(
        {"_id": "lock", "owner": "other", "host": "pod-1", "expires_at": live}
    )
    runner = cli(mongod.uri, real_db.name, tmp_path, "--migrations", str(folder), "up")
    assert runner.stdout is not None
    first = runner.stdout.readline()
    if first.startswith("Database "):  # the target line comes first
        first = runner.stdout.readline()
    assert first.startswith("Waiting for the migration lock held by run other on host pod-1"), first
    runner.send_signal(signal.SIGTERM)
    output = runner.communicate(timeout=60)[0]
    assert runner.returncode == EXIT_TERMINATED, output
    assert "stopped by SIGTERM while waiting for the lock; nothing was done" in output
    assert real_db["migrations_lock"].find_one({}, {"_id": 0, "owner": 1}) == {"owner": "other"}
    assert counters(real_db) == {}
    assert history(real_db, EngineOptions()) == []


def test_a_stop_requested_just_before_a_resumable_migration_starts_is_not_lost(
    real_db: Database[Any], tmp_path: Path
) -> None:
    # SIGTERM between the 'applying' record and the migration's first line used to be deferred
    # to the migration's end: a long migration then never stopped.
    folder = tmp_path / "m"
    write_migration(folder, "0001_long", """
        import time

        RESUMABLE = True

        def up(db: Any) -> None:
            time.sleep(10)
            raise RuntimeError("the stop was not honoured")

        def down(db: Any) -> None:
            pass
    """)  # fmt: skip
    runner: Runner

    def report(line: str) -> None:
        if line.startswith("0001_long: "):  # the engine's own code: not interruptible here
            runner.request_stop("SIGTERM")

    runner = Runner(real_db, discover(folder), options(), report=report)
    with pytest.raises(Terminated, match="stopped by SIGTERM during 0001_long") as info:
        runner.up()  # (unfixed, it ran the 10 s migration, which then failed)
    assert info.value.exit_code == EXIT_TERMINATED
    assert changelog(real_db)["0001_long"]["state"] == "applying"  # resumable: the next up resumes
    assert real_db["migrations_lock"].count_documents({}) == 0
