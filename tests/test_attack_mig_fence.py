"""Attacks on the fence with a runner that lost its lease *inside* a migration (``unlock
--force`` racing it; a SIGSTOP past the lease is the same from the server's side).

The fence guarded only the changelog: ``down`` of a resumable migration, unlocked mid-revert, let
the next ``up`` resume (re-apply) it, and then the old runner's ``down()`` went on writing: the
data ended reverted while the changelog said applied. Now the steps check the fence before every
write they send, and custom code calls ``context().fence()`` before its own writes (as this
migration does); the old runner stops with ``LockLost`` and writes nothing more
(``tests/test_migrate_fence_steps.py`` covers the steps' batches).

Also here, the races that held: ``stamp`` over a forcibly unlocked runner mid-``up`` (its late
``applied`` write is refused, it exits with ``LockLost``, the stamp stands).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from pymongo.database import Database

from tests.migration_fixtures import write_migration
from userfiles_db.migrate import EngineOptions, LockLost, MigrationError, Runner, discover, history, unlock

FLIP = """
import time

from userfiles_db.migrate import context

RESUMABLE = True

def up(db: Any) -> None:
    if %(wait_up)s:
        while not db["switch"].find_one({"_id": "go"}):
            time.sleep(0.02)
    db["state"].update_one({"_id": "x"}, {"$set": {"v": "up"}, "$inc": {"ups": 1}}, upsert=True)

def down(db: Any) -> None:
    while not db["switch"].find_one({"_id": "go"}):
        time.sleep(0.02)
    context().fence()  # custom code checks the fence before its own writes (the steps do it for theirs)
    db["state"].update_one({"_id": "x"}, {"$set": {"v": "down"}}, upsert=True)
"""


def options() -> EngineOptions:
    return EngineOptions(lock_lease_seconds=1.0, lock_poll_seconds=0.05, lock_timeout_seconds=30)


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def state_of(db: Database[Any], migration_id: str) -> str | None:
    record = db["migrations_changelog"].find_one({"_id": migration_id})
    return None if record is None else str(record.get("state"))


def in_thread(call: Any) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, errors


def test_a_down_unlocked_mid_revert_never_leaves_data_contradicting_the_changelog(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_flip", FLIP % {"wait_up": False})
    migrations = discover(folder)
    Runner(real_db, migrations, options()).up()
    assert real_db["state"].find_one({"_id": "x"}) == {"_id": "x", "v": "up", "ups": 1}

    reverting = Runner(real_db, migrations, options())
    thread, errors = in_thread(reverting.down)
    wait_for(lambda: state_of(real_db, "0001_flip") == "reverting", "the revert to start")
    assert unlock(real_db, options(), force=True) is not None  # an operator's `unlock --force`

    resumed = Runner(real_db, migrations, options()).up()  # no flags: resumes by itself
    assert resumed.resumed == ["0001_flip"]
    assert state_of(real_db, "0001_flip") == "applied"

    real_db["switch"].insert_one({"_id": "go"})  # the old runner's down() continues
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], (LockLost, MigrationError))
    # The promise: a runner that lost the lease writes nothing more; the changelog says applied.
    assert state_of(real_db, "0001_flip") == "applied"
    assert real_db["state"].find_one({"_id": "x"}) == {"_id": "x", "v": "up", "ups": 2}


def test_stamp_over_a_forcibly_unlocked_runner_stands_and_the_runner_stops(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_flip", FLIP % {"wait_up": True})
    migrations = discover(folder)
    applying = Runner(real_db, migrations, options())
    thread, errors = in_thread(applying.up)
    wait_for(lambda: state_of(real_db, "0001_flip") == "applying", "the apply to start")
    assert unlock(real_db, options(), force=True) is not None

    stamper = Runner(real_db, migrations, options())
    assert stamper.stamp("0001_flip").done == ["0001_flip"]
    real_db["switch"].insert_one({"_id": "go"})
    thread.join(30)
    assert not thread.is_alive()
    assert [type(e) for e in errors] == [LockLost]
    record = real_db["migrations_changelog"].find_one({"_id": "0001_flip"})
    assert record is not None
    assert (record["state"], record["run_id"], record.get("stamped")) == ("applied", stamper.run_id, True)
    kinds = [(e["event"], e.get("run_id")) for e in history(real_db, EngineOptions())]
    assert ("stamped", stamper.run_id) in kinds
    assert ("lock_lost", applying.run_id) in kinds
