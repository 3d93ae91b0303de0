"""The fence reaches the data: a runner that lost its lease stops before its next batch.

attack2 found that only changelog writes were fenced: a migration whose runner was unlocked (or
paused past its lease) kept writing data after another runner had taken over. The steps now check
the fence before every write they send, so a batched data step stops at the next batch.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from pymongo.database import Database

from tests.migration_fixtures import write_migration
from userfiles_db.migrate import EngineOptions, LockLost, MigrationError, Runner, context, discover, unlock

FLIP = """
from userfiles_db.migrate import steps

RESUMABLE = True

def up(db: Any) -> None:
    steps.batched_update(db, "data", {"v": 0}, [{"$set": {"v": 1}}], label="flip", batch_size=100)

def down(db: Any) -> None:
    steps.batched_update(db, "data", {"v": 1}, [{"$set": {"v": 0}}], label="unflip", batch_size=100)
"""


def options() -> EngineOptions:
    return EngineOptions(lock_lease_seconds=5.0, lock_poll_seconds=0.05, lock_timeout_seconds=30)


def test_a_runner_unlocked_mid_migration_writes_no_further_batch(
    real_db: Database[Any], tmp_path: Path
) -> None:
    real_db["data"].insert_many([{"_id": n, "v": 0} for n in range(1000)])
    folder = tmp_path / "m"
    write_migration(folder, "0001_flip", FLIP)
    first_batch, release = threading.Event(), threading.Event()

    def progress(_label: str, done: int, _total: int) -> None:
        if done == 100:  # after the first batch: hold the runner here
            first_batch.set()
            release.wait(30)

    runner = Runner(real_db, discover(folder), options(), progress=progress)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            runner.up()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert first_batch.wait(30)
    assert unlock(real_db, options(), force=True) is not None  # an operator's `unlock --force`
    release.set()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], (LockLost, MigrationError)), errors
    assert real_db["data"].count_documents({"v": 1}) == 100  # nothing written after the fence


def test_outside_a_run_the_fence_lets_everything_through() -> None:
    context().fence()  # library use of the steps, tests, dry runs: no lock, nothing to check
