"""Attack: ``kill -9`` of ``migrate.py down`` in the middle of the bundled revert (0002, batched),
a point the random-kill test does not hit (it kills ``up`` only).

After the kill, with no flags and no person: ``up`` re-applies what the revert left half done
(0002 is resumable) and every record equals the model of the conversion, each migration once in
the changelog; or ``down`` again finishes the revert and every record is back in the legacy shape.
"""

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

from tests.migration_fixtures import LEGACY_NOW, create_bot_collection
from tests.test_migrate_faults import _model
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import EngineOptions, Runner, discover, history, status
from userfiles_db.migrate.config import bundled_migrations

ROOT = Path(__file__).parent.parent
RECORDS = 4000


def migrate(uri: str, db: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": db, "USERFILES_BATCH_SIZE": "20",
           "USERFILES_LOCK_LEASE_SECONDS": "0.5", "USERFILES_LOCK_POLL_SECONDS": "0.05"}  # fmt: skip
    return subprocess.Popen(
        [sys.executable, str(ROOT / "migrate.py"), *args], cwd=cwd, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def state(db: Database[Any], migration_id: str) -> str | None:
    record = db["migrations_changelog"].find_one({"_id": migration_id})
    return None if record is None else str(record["state"])


@pytest.mark.parametrize("then", ["up", "down"])
def test_kill_9_mid_revert_then_the_next_command_with_no_flags_finishes_it(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path, then: str
) -> None:
    create_bot_collection(real_db, RECORDS * 2, now=LEGACY_NOW)
    # Only records the TTL index (0003) will not delete meanwhile: no race with its monitor.
    soon = (LEGACY_NOW + dt.timedelta(hours=1)).isoformat()
    kept = [
        d["_id"]
        for d in real_db["user_files"].find({}, {"expires_at": 1}).sort("_id", 1)
        if d["expires_at"] is None or d["expires_at"] > soon
    ][:RECORDS]
    real_db["user_files"].delete_many({"_id": {"$nin": kept}})
    assert real_db["user_files"].count_documents({}) == RECORDS
    legacy = {d["file_id"]: d for d in real_db["user_files"].find({}, {"_id": 0})}
    model = {file_id: _model(d) for file_id, d in legacy.items()}
    options = EngineOptions(lock_lease_seconds=0.5, lock_poll_seconds=0.05,
                            migration_options={"batch_size": 500})  # fmt: skip
    Runner(real_db, discover(bundled_migrations()), options).up()

    reverting = migrate(mongod.uri, real_db.name, tmp_path, "down", "--to", "0001_create_user_files")
    deadline = time.monotonic() + 60
    legacy_now = {"file_size": {"$exists": True}}
    while real_db["user_files"].count_documents(legacy_now) < RECORDS // 4 and reverting.poll() is None:
        assert time.monotonic() < deadline, "the revert did not start"
        time.sleep(0.005)
    reverting.send_signal(signal.SIGKILL)
    reverting.communicate(timeout=30)
    half = real_db["user_files"].count_documents(legacy_now)
    assert 0 < half < RECORDS, "the kill did not land mid-revert"
    assert state(real_db, "0002_adopt_legacy_records") == "reverting"

    if then == "up":
        runner = migrate(mongod.uri, real_db.name, tmp_path, "up")
        output = runner.communicate(timeout=120)[0]
        assert runner.returncode == 0, output
        assert "0002_adopt_legacy_records: resuming what run" in output
        after = {d["file_id"]: d for d in real_db["user_files"].find({}, {"_id": 0})}
        assert after == model
        found = status(real_db, discover(bundled_migrations()), EngineOptions())
        assert [e.state for e in found.entries] == ["applied"] * 4
    else:
        runner = migrate(mongod.uri, real_db.name, tmp_path, "down", "--to", "0001_create_user_files")
        output = runner.communicate(timeout=120)[0]
        assert runner.returncode == 0, output
        assert "continuing the revert that run" in output
        assert real_db["user_files"].count_documents(legacy_now) == RECORDS
        assert real_db["user_files"].count_documents({"created_at": {"$exists": True}}) == 0
        assert state(real_db, "0002_adopt_legacy_records") is None
        assert state(real_db, "0001_create_user_files") == "applied"
    assert real_db["migrations_lock"].count_documents({}) == 0
    events = [(e["event"], e.get("migration")) for e in history(real_db, EngineOptions())]
    assert ("revert_started", "0002_adopt_legacy_records") in events


def test_sigterm_mid_revert_stops_at_once_releases_the_lock_and_up_resumes(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    """SIGTERM (``docker stop``) during ``down`` of the bundled adoption: exit 7, the lock
    released, the revert recorded as interrupted ('reverting'), and ``up`` with no flags and no
    wait for a lease completes the conversion."""
    create_bot_collection(real_db, RECORDS * 2, now=LEGACY_NOW)
    soon = (LEGACY_NOW + dt.timedelta(hours=1)).isoformat()
    kept = [
        d["_id"]
        for d in real_db["user_files"].find({}, {"expires_at": 1}).sort("_id", 1)
        if d["expires_at"] is None or d["expires_at"] > soon
    ][:RECORDS]
    real_db["user_files"].delete_many({"_id": {"$nin": kept}})
    model = {d["file_id"]: _model(d) for d in real_db["user_files"].find({}, {"_id": 0})}
    options = EngineOptions(migration_options={"batch_size": 500})
    Runner(real_db, discover(bundled_migrations()), options).up()

    reverting = migrate(mongod.uri, real_db.name, tmp_path, "down", "--to", "0001_create_user_files")
    deadline = time.monotonic() + 60
    legacy_now = {"file_size": {"$exists": True}}
    while real_db["user_files"].count_documents(legacy_now) < RECORDS // 4 and reverting.poll() is None:
        assert time.monotonic() < deadline, "the revert did not start"
        time.sleep(0.005)
    reverting.send_signal(signal.SIGTERM)
    output = reverting.communicate(timeout=60)[0]
    assert reverting.returncode == 7, output
    assert "stopped by SIGTERM while undoing 0002_adopt_legacy_records" in output
    assert 0 < real_db["user_files"].count_documents(legacy_now) < RECORDS
    assert state(real_db, "0002_adopt_legacy_records") == "reverting"
    assert real_db["migrations_lock"].count_documents({}) == 0  # released: no lease to wait out

    runner = migrate(mongod.uri, real_db.name, tmp_path, "up")
    output = runner.communicate(timeout=120)[0]
    assert runner.returncode == 0, output
    assert {d["file_id"]: d for d in real_db["user_files"].find({}, {"_id": 0})} == model
    events = [(e["event"], e.get("migration"), e.get("exit_code")) for e in history(real_db, EngineOptions())]
    assert ("interrupted", "0002_adopt_legacy_records", None) in events
    assert [code for event, _, code in events if event == "run_finished"][-2:] == [7, 0]
