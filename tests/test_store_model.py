"""Hypothesis state machines (sync and async) against a plain model of the rules: the live rule
with legacy records in several spellings and a moving clock, per-origin limits with the one total
order, and concurrent over-limit saves (threads for the sync API, asyncio.gather for the async)."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from pymongo.database import Database

from tests.conftest import EventLoopThread, MovableClock
from tests.helpers import file_data
from tests.migration_fixtures import create_bot_collection
from userfiles_db import AsyncUserFiles, UserFiles
from userfiles_db.clock import UTC

USERS = (10**17 + 1, 42)
LIMITS = {"upload": 3, "generated": 2}
SPELLINGS: dict[str, Callable[[dt.datetime], str]] = {
    "naive": lambda m: m.replace(tzinfo=None).isoformat(),
    "Z": lambda m: m.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    "+02:00": lambda m: m.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(),
    "-05:00": lambda m: m.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat(),
    "space": lambda m: m.strftime("%Y-%m-%d %H:%M:%S"),
    "basic": lambda m: m.strftime("%Y%m%dT%H%M%S"),
}


@dataclass
class Model:
    """A record as the rules see it."""

    user_id: int
    origin: str
    created_at: dt.datetime
    expires_at: dt.datetime | None


def ms(moment: dt.datetime) -> dt.datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class StoreMachine(RuleBasedStateMachine):
    """Drives one API (``call`` runs a store method) and checks it against ``self.model``."""

    # db, make(**options), run(awaitable or value), concurrently(store, batch); a dict, because
    # hypothesis inspects class attributes (a Database makes up any attribute asked for).
    env: dict[str, Any]

    def __init__(self) -> None:
        super().__init__()
        self.db: Database[Any] = self.env["db"]
        self.db["user_files"].delete_many({})
        # Far from the real now, so the server's TTL monitor never acts on these dates.
        self.clock = MovableClock(dt.datetime.now(UTC) + dt.timedelta(days=400))
        self.store = self.env["make"](
            clock=self.clock,
            max_files_per_user=LIMITS["upload"],
            max_generated_files_per_user=LIMITS["generated"],
            expiration_hours=1,
        )
        self.model: dict[str, Model] = {}
        self.serial = 0

    def call(self, name: str, *args: Any) -> Any:
        return self.env["run"](getattr(self.store, name)(*args))

    # -- the model's rules ----------------------------------------------------------------------

    def live(self, record: Model) -> bool:
        return record.expires_at is None or record.expires_at > self.clock.now

    def expected_evictions(self, user_id: int, origin: str) -> set[str]:
        group = [
            (r.created_at, fid)
            for fid, r in self.model.items()
            if r.user_id == user_id and r.origin == origin and self.live(r)
        ]
        group.sort(reverse=True)
        return {fid for _, fid in group[LIMITS[origin] :]}

    def new_data(self, user: int, origin: str, never: bool) -> dict[str, Any]:
        self.serial += 1
        data = file_data(USERS[user], self.serial)
        if origin == "generated":
            data["origin"] = "generated"
        if never:
            data["expires_at"] = None
        return data

    def remember(self, data: dict[str, Any]) -> None:
        now = self.clock.now
        expires = None if "expires_at" in data else now + dt.timedelta(hours=1)
        self.model[data["file_id"]] = Model(data["user_id"], data.get("origin", "upload"), now, expires)

    # -- rules -----------------------------------------------------------------------------------

    @rule(user=st.integers(0, 1), origin=st.sampled_from(["upload", "generated"]), never=st.booleans())
    def save(self, user: int, origin: str, never: bool) -> None:
        data = self.new_data(user, origin, never)
        self.remember(data)
        expected = self.expected_evictions(data["user_id"], origin)
        evicted = {r["file_id"] for r in self.call("save_user_file", data)}
        assert evicted == expected
        for file_id in evicted:
            del self.model[file_id]

    @rule(user=st.integers(0, 1), origin=st.sampled_from(["upload", "generated"]), count=st.integers(2, 6))
    def concurrent_saves(self, user: int, origin: str, count: int) -> None:
        batch = [self.new_data(user, origin, False) for _ in range(count)]
        for data in batch:
            self.remember(data)
        expected = self.expected_evictions(USERS[user], origin)
        results = self.env["concurrently"](self.store, batch)
        evicted = [r["file_id"] for result in results for r in result]
        assert len(evicted) == len(set(evicted)), "an eviction reported twice"
        assert set(evicted) == expected
        for file_id in evicted:
            del self.model[file_id]

    @rule(user=st.integers(0, 1), spelling=st.sampled_from(sorted(SPELLINGS)), minutes=st.integers(-90, 90),
          age=st.integers(0, 120))  # fmt: skip
    def insert_legacy(self, user: int, spelling: str, minutes: int, age: int) -> None:
        # The old bot's writer, straight into the collection (second precision: "basic" and
        # "space" drop the fraction).
        self.serial += 1
        now = self.clock.now.replace(microsecond=0)
        created = now - dt.timedelta(minutes=age)
        expires = now + dt.timedelta(minutes=minutes, seconds=30)
        data = file_data(USERS[user], self.serial)
        doc = {k: v for k, v in data.items() if k != "size"}
        doc |= {"file_size": data["size"], "uploaded_at": SPELLINGS[spelling](created),
                "expires_at": SPELLINGS[spelling](expires)}  # fmt: skip
        self.db["user_files"].insert_one(doc, bypass_document_validation=True)
        self.model[data["file_id"]] = Model(USERS[user], "upload", ms(created), ms(expires))

    @rule(minutes=st.integers(1, 150))
    def advance(self, minutes: int) -> None:
        self.clock.advance(minutes=minutes)

    @rule()
    def delete_expired(self) -> None:
        expired = {fid for fid, r in self.model.items() if not self.live(r)}
        assert self.call("delete_expired_files") == len(expired)
        for file_id in expired:
            del self.model[file_id]

    @rule(user=st.integers(0, 1))
    def take_oldest(self, user: int) -> None:
        mine = sorted((r.created_at, fid) for fid, r in self.model.items() if r.user_id == USERS[user])
        if mine:
            taken = self.call("take_file", mine[0][1], USERS[user])
            assert taken is not None
            del self.model[mine[0][1]]

    # -- what every reader sees ----------------------------------------------------------------

    @invariant()
    def listings_match_the_model(self) -> None:
        for user_id in USERS:
            want = sorted(
                (
                    (r.created_at, fid)
                    for fid, r in self.model.items()
                    if r.user_id == user_id and self.live(r)
                ),
                reverse=True,
            )
            got = self.call("get_user_files", user_id)
            assert [r["file_id"] for r in got] == [fid for _, fid in want]
            for record in got:
                assert record["created_at"] == self.model[record["file_id"]].created_at
                assert record["expires_at"] == self.model[record["file_id"]].expires_at
        assert self.db["user_files"].count_documents({}) == len(self.model)


MACHINE_SETTINGS = settings(
    max_examples=20, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)
)


@pytest.mark.parametrize("write_shape", ["canonical", "legacy"])
def test_sync_store_follows_the_model(write_shape: str, request: pytest.FixtureRequest) -> None:
    if write_shape == "canonical":
        db: Database[Any] = request.getfixturevalue("real_user_files_db")
    else:  # the rollout's first stage: the bot's own collection (no validator), old shape written
        db = request.getfixturevalue("real_db")
        create_bot_collection(db, 0, now=dt.datetime(2030, 1, 1))

    def concurrently(store: UserFiles, batch: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        start = threading.Barrier(len(batch))

        def save(data: dict[str, Any]) -> list[dict[str, Any]]:
            start.wait()
            return store.save_user_file(data)

        with ThreadPoolExecutor(len(batch)) as pool:
            return list(pool.map(save, batch))

    class Sync(StoreMachine):
        env = {  # noqa: RUF012
            "db": db,
            "make": lambda **kw: UserFiles(db, write_shape=write_shape, **kw),
            "run": lambda value: value,
            "concurrently": concurrently,
        }

    run_state_machine_as_test(Sync, settings=MACHINE_SETTINGS)
    if write_shape == "legacy":  # what the last example left: only the old bot's shape
        assert db["user_files"].count_documents({"created_at": {"$exists": True}}) == 0


def test_async_store_follows_the_model(
    real_user_files_db: Database[Any], async_client: Any, event_loop_thread: EventLoopThread
) -> None:
    async_db = async_client[real_user_files_db.name]

    def concurrently(store: AsyncUserFiles, batch: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        async def all_at_once() -> list[list[dict[str, Any]]]:
            return list(await asyncio.gather(*(store.save_user_file(data) for data in batch)))

        return event_loop_thread.run(all_at_once())

    class Async(StoreMachine):
        env = {  # noqa: RUF012
            "db": real_user_files_db,
            "make": lambda **kw: AsyncUserFiles(async_db, **kw),
            "run": event_loop_thread.run,
            "concurrently": concurrently,
        }

    run_state_machine_as_test(Async, settings=MACHINE_SETTINGS)
