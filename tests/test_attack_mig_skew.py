"""Attacks with clock skew between runners (hosts whose clocks disagree).

Held: the lease is judged by the server's clock (``$$NOW``): a runner whose clock is hours ahead
cannot take a live lease, and one hours behind does not keep an expired one.

Was broken: ``history --limit N`` picked "the newest N" by ``_id``, an ObjectId whose time part is
the *writing host's* clock: after a run from a host 3 hours ahead it kept showing that host's
events and hid the newest ones. The history now has an index on the server's ``at`` (made by the
first write) and ``--limit`` reads the newest by it.
"""

from __future__ import annotations

import datetime as dt
import importlib
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo.database import Database

from tests.migration_fixtures import write_migration
from userfiles_db.migrate import EngineOptions, LockTimeout, Runner, discover, history

hist_module = importlib.import_module("userfiles_db.migrate.history")  # the package shadows it

WAIT = """
import time

def up(db: Any) -> None:
    while not db["switch"].find_one({"_id": "go"}):
        time.sleep(0.02)

def down(db: Any) -> None:
    pass
"""

PLAIN = """
def up(db: Any) -> None:
    db["marks"].insert_one({"_id": "%(stem)s"})

def down(db: Any) -> None:
    pass
"""


def skewed_object_ids(monkeypatch: pytest.MonkeyPatch, hours: float) -> None:
    """ObjectIds as a host whose clock is ``hours`` off makes them (bson uses the host's clock)."""

    def make() -> ObjectId:
        when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)
        return ObjectId(ObjectId.from_datetime(when).binary[:4] + ObjectId().binary[4:])

    monkeypatch.setattr(hist_module, "ObjectId", make)


def test_a_runner_with_a_clock_hours_ahead_cannot_take_a_live_lease(
    real_db: Database[Any], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_wait", WAIT)
    migrations = discover(folder)
    behind = Runner(real_db, migrations, EngineOptions(lock_lease_seconds=1.0),
                    clock=lambda: dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=3))  # fmt: skip
    thread = threading.Thread(target=behind.up, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while real_db["migrations_changelog"].count_documents({}) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ahead = Runner(real_db, migrations,
                   EngineOptions(lock_lease_seconds=1.0, lock_timeout_seconds=2.5, lock_poll_seconds=0.05),
                   clock=lambda: dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=3))  # fmt: skip
    with pytest.raises(LockTimeout):
        ahead.up()
    real_db["switch"].insert_one({"_id": "go"})
    thread.join(30)
    record = real_db["migrations_changelog"].find_one({"_id": "0001_wait"})
    assert record is not None
    assert (record["state"], record["run_id"]) == ("applied", behind.run_id)


def test_history_limit_shows_the_newest_events_whatever_the_hosts_clocks(
    real_db: Database[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "m"
    write_migration(folder, "0001_first", PLAIN % {"stem": "0001_first"})
    with monkeypatch.context() as patch:
        skewed_object_ids(patch, hours=3)  # this run comes from a host 3 hours ahead
        Runner(real_db, discover(folder), EngineOptions()).up()
    write_migration(folder, "0002_second", PLAIN % {"stem": "0002_second"})
    later = Runner(real_db, discover(folder), EngineOptions())
    later.up()
    everything = history(real_db, EngineOptions())
    assert everything[-1]["run_id"] == later.run_id  # ordered by the server's clock
    newest = history(real_db, EngineOptions(), limit=2)
    assert newest == everything[-2:]
