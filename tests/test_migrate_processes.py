"""migrate.py as separate processes: many at once, one killed midway, transactions."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.migration_fixtures import LEGACY_NOW, create_bot_collection, write_migration
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import EngineOptions, MigrationError, Runner, discover, history, status


def ms(value: dt.datetime) -> dt.datetime:
    """``value`` at BSON's millisecond precision, as the server stores it (naive UTC)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


MIGRATE = str(Path(__file__).parent.parent / "migrate.py")


def start(uri: str, db: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": db}
    return subprocess.Popen(
        [sys.executable, MIGRATE, *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def test_six_runners_at_once_apply_each_migration_once(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    (tmp_path / "migrate.yaml").write_text("lock_poll_seconds: 0.1\n")
    runners = [start(mongod.uri, real_db.name, tmp_path, "up") for _ in range(6)]
    outputs = [p.communicate(timeout=120)[0] for p in runners]
    assert [p.returncode for p in runners] == [0] * 6, outputs
    everything = "".join(outputs)
    for migration_id in ("0001_create_user_files", "0002_adopt_legacy_records",
                         "0003_enable_ttl", "0004_enforce_validator"):  # fmt: skip
        assert everything.count(f"{migration_id}: ") == 1, everything
    assert sum("Nothing to apply" in out for out in outputs) == 5
    assert len(status(real_db, discover(Path(__file__).parent.parent / "migrations"),
                      EngineOptions()).applied) == 4  # fmt: skip


def test_a_runner_killed_midway_is_resumed_by_the_next_up_with_no_flags(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    """The simulated pipeline: a Job's runner is SIGKILLed (an OOM kill) mid-adoption; the
    retried Job runs the same `up`, which waits out the dead lease, resumes the bundled
    (resumable) adoption by itself and exits 0. Nothing is lost; the history shows both runs."""
    count = 60_000
    create_bot_collection(real_db, count, now=LEGACY_NOW)
    before = {d["file_id"]: d for d in real_db["user_files"].find({}, {"_id": 0})}
    (tmp_path / "migrate.yaml").write_text("lock_lease_seconds: 2\nmigration_options:\n  batch_size: 500\n")
    collection = real_db["user_files"]
    runner = start(mongod.uri, real_db.name, tmp_path, "up")
    deadline = time.monotonic() + 60
    while collection.count_documents({"size": {"$exists": True}}) < count // 10:
        assert runner.poll() is None, runner.communicate()[0]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    converted = collection.count_documents({"size": {"$exists": True}})
    assert 0 < converted < count, "the runner was not killed in the middle of the conversion"
    changelog = real_db["migrations_changelog"].find_one({"_id": "0002_adopt_legacy_records"})
    assert changelog is not None
    assert changelog["state"] == "applying"
    lock = real_db["migrations_lock"].find_one({})
    assert lock is not None
    assert lock["owner"] == changelog["run_id"]
    killed_run = changelog["run_id"]

    again = start(mongod.uri, real_db.name, tmp_path, "up")
    output = again.communicate(timeout=120)[0]
    assert again.returncode == 0, output
    assert f"0002_adopt_legacy_records: resuming what run {killed_run}" in output
    assert output.splitlines()[-1] == f"Database {real_db.name}: 4 applied, 0 pending."

    # Every record is the conversion of its legacy original (the TTL of 0003 may already have
    # deleted expired ones: nothing else is missing).
    after = {d["file_id"]: d for d in collection.find({}, {"_id": 0})}
    expired = {f for f, d in before.items() if d["expires_at"] and d["expires_at"] < LEGACY_NOW.isoformat()}
    assert set(before) - set(after) <= expired
    for file_id, record in after.items():
        legacy = before[file_id]
        assert record["size"] == legacy["file_size"]
        assert record["created_at"] == ms(dt.datetime.fromisoformat(legacy["uploaded_at"]))
        assert "uploaded_at" not in record
        assert "file_size" not in record
    assert real_db["migrations_lock"].count_documents({}) == 0

    events = [(e["run_id"], e["event"], e.get("migration")) for e in history(real_db, EngineOptions())]
    second = events[-1][0]
    assert events[0] == (killed_run, "run_started", None)
    assert (killed_run, "run_finished", None) not in events  # the killed run never finished
    assert [(e, m) for r, e, m in events if r == second] == [
        ("run_started", None),
        ("resumed", "0002_adopt_legacy_records"),
        ("started", "0002_adopt_legacy_records"),
        ("applied", "0002_adopt_legacy_records"),
        ("started", "0003_enable_ttl"),
        ("applied", "0003_enable_ttl"),
        ("started", "0004_enforce_validator"),
        ("applied", "0004_enforce_validator"),
        ("run_finished", None),
    ]
    finished = history(real_db, EngineOptions())[-1]
    assert (finished["exit_code"], finished["outcome"]) == (0, "ok")


FAILS_AFTER_A_WRITE = """
from userfiles_db.migrate import current_session

TRANSACTIONAL = True

def up(db: Any) -> None:
    db["marks"].insert_one({"_id": "written"}, session=current_session())
    raise RuntimeError("boom")

def down(db: Any) -> None:
    pass
"""

SUCCEEDS = """
from userfiles_db.migrate import current_session

TRANSACTIONAL = True

def up(db: Any) -> None:
    db["marks"].insert_one({"_id": "ok"}, session=current_session())

def down(db: Any) -> None:
    db["marks"].delete_one({"_id": "ok"}, session=current_session())
"""


def test_transactional_migration_rolls_back_on_a_replica_set(
    replica_set: LocalMongod, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_ok", SUCCEEDS)
    write_migration(folder, "0002_fails", FAILS_AFTER_A_WRITE)
    with replica_set.client() as client:
        db = client["txn_test"]
        with pytest.raises(MigrationError, match="transaction was rolled back"):
            Runner(db, discover(folder)).up()
        assert db["marks"].distinct("_id") == ["ok"]  # 0002's write is gone
        found = status(db, discover(folder), EngineOptions())
        assert [(e.id, e.state) for e in found.entries] == [
            ("0001_ok", "applied"),
            ("0002_fails", "pending"),
        ]
        assert Runner(db, discover(folder)).down().done == ["0001_ok"]
        assert db["marks"].count_documents({}) == 0
        client.drop_database("txn_test")


def test_on_a_standalone_the_same_migration_is_recorded_failed(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0002_fails", FAILS_AFTER_A_WRITE)
    lines: list[str] = []
    with pytest.raises(MigrationError, match="recorded 'failed'"):
        Runner(real_db, discover(folder), report=lines.append).up()
    assert "  note: standalone server, 0002_fails runs without a transaction" in lines
    assert real_db["marks"].distinct("_id") == ["written"]  # no transaction: the write stays
    assert status(real_db, discover(folder), EngineOptions()).entries[0].state == "failed"
    with pytest.raises(MigrationError, match="standalone"):
        Runner(real_db, discover(folder), EngineOptions(transactions="always")).up(resume=True)


def test_without_a_uri_an_embedded_server_is_used(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI", "MONGODB_DB")}
    done = subprocess.run([sys.executable, MIGRATE, "--embedded", "up"], cwd=tmp_path, env=env,
                          text=True, capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[:2] == [
        "Database chatgpt_discord_bot on the embedded local MongoDB",
        f"Using an embedded local MongoDB (data in {tmp_path / '.userfiles-mongod'}/)",
    ]
    assert done.stdout.splitlines()[-1] == "Database chatgpt_discord_bot: 4 applied, 0 pending."
    assert (tmp_path / ".userfiles-mongod").is_dir()
    again = subprocess.run([sys.executable, MIGRATE, "--embedded", "status", "--check"], cwd=tmp_path,
                           env=env, text=True, capture_output=True, timeout=120)  # fmt: skip
    assert again.returncode == 0, again.stderr  # the data persisted between runs

    env["USERFILES_MONGOD"] = str(tmp_path / "no-such-mongod")
    missing = subprocess.run([sys.executable, MIGRATE, "--embedded", "status"], cwd=tmp_path, env=env,
                             text=True, capture_output=True, timeout=60)  # fmt: skip
    assert missing.returncode == 1
    assert "set MONGODB_URI" in missing.stderr
    assert "python -m pip install 'userfiles_db[server]'" in missing.stderr
