"""Issue 9 items 6 and 7, issue 8 (f)/(g): every call is bounded in time, and an interrupted save
reports what it evicted. On a server of this module's own (test commands on, so fail points can
break or slow one command of one client), frozen with SIGSTOP where needed and resumed after."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient, monitoring
from pymongo.database import Database

from tests.conftest import EventLoopThread
from tests.helpers import file_data, freeze
from userfiles_db import AsyncUserFiles, DatabaseUnavailable, SaveIncomplete, UserFiles
from userfiles_db.clock import UTC
from userfiles_db.local_server import LocalMongod, free_port
from userfiles_db.migrate.steps import create_collection
from userfiles_db.schema import load_schema

USER = 123456789012345678
APP = "victim"
BOUND = 0.5  # the store's timeout_seconds in these tests
PATIENT = 20.0  # for set-up and recovery calls, which must not flake on a loaded machine
HANG = 15.0  # "does not hang": far above the bound, far below the driver's 30 s default


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMongod]:
    server = LocalMongod(tmp_path_factory.mktemp("mongod-faults"), set_parameters={"enableTestCommands": 1})
    server.start()
    yield server
    if server.process is not None:
        os.kill(server.process.pid, signal.SIGCONT)  # never leave it frozen
    server.stop()


@pytest.fixture
def admin(fault_server: LocalMongod) -> Iterator[MongoClient[dict[str, Any]]]:
    with fault_server.client() as client:
        yield client
        client.admin.command("configureFailPoint", "failCommand", mode="off")


@pytest.fixture
def fault_db(admin: MongoClient[dict[str, Any]], request: pytest.FixtureRequest) -> Iterator[Database[Any]]:
    name = f"f_{abs(hash(request.node.name)) % 10**12}"
    admin.drop_database(name)
    db = admin[name]
    create_collection(db, load_schema())
    yield db
    admin.drop_database(name)


def fail_next(admin: MongoClient[dict[str, Any]], command: str, **data: Any) -> None:
    """Make the victim client's next ``command`` fail (or block) once."""
    admin.admin.command(
        "configureFailPoint",
        "failCommand",
        mode={"times": 1},
        data={"failCommands": [command], "appName": APP, **data},
    )


class AfterNth(monitoring.CommandListener):
    """Runs ``action`` once, right after the victim's ``n``-th successful ``command``."""

    def __init__(self, command: str, n: int, action: Callable[[], None]) -> None:
        self.command, self.n, self.action, self.seen = command, n, action, 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.command_name == self.command:
            self.seen += 1
            if self.seen == self.n:
                self.action()

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def seed_old_records(db: Database[Any], count: int) -> list[str]:
    """``count`` live records of USER, older than anything saved now; oldest first."""
    base = dt.datetime.now(UTC) - dt.timedelta(hours=1)
    docs = [
        {**file_data(USER, n), "created_at": base + dt.timedelta(seconds=n), "expires_at": None}
        for n in range(count)
    ]
    db["user_files"].insert_many(docs)
    return [doc["file_id"] for doc in docs]


# --- a server that is down, or frozen: every call answers within the bound -------------------


def _assert_bounded(call: Callable[[], Any], operation: str) -> None:
    started = time.monotonic()
    with pytest.raises(
        DatabaseUnavailable, match=rf"{operation}: the database did not answer within 0.5 s"
    ) as info:
        call()
    assert time.monotonic() - started < HANG
    assert info.value.__cause__ is not None


def test_a_server_that_is_down_fails_fast_sync() -> None:
    client: MongoClient[dict[str, Any]]
    with MongoClient(f"mongodb://127.0.0.1:{free_port()}/?directConnection=true") as client:
        store = UserFiles(client["db"], timeout_seconds=BOUND)
        _assert_bounded(lambda: store.get_user_files(USER), "get_user_files")
        _assert_bounded(lambda: store.save_user_file(file_data(USER, 1)), "save_user_file")


@pytest.mark.parametrize("driver", ["async", "motor"])
def test_a_server_that_is_down_fails_fast_async(driver: str, event_loop_thread: EventLoopThread) -> None:
    uri = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"

    async def scenario() -> None:
        client = _async_client(driver, uri)
        store = AsyncUserFiles(client["db"], timeout_seconds=BOUND)
        try:
            calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                ("get_user_files", lambda: store.get_user_files(USER)),
                ("save_user_file", lambda: store.save_user_file(file_data(USER, 1))),
            ]
            for operation, call in calls:
                started = time.monotonic()
                with pytest.raises(DatabaseUnavailable, match=rf"{operation}: .* within 0.5 s"):
                    await call()
                assert time.monotonic() - started < HANG
        finally:
            await _close(client)

    event_loop_thread.run(scenario())


def _async_client(driver: str, uri: str, **options: Any) -> Any:
    if driver == "async":
        return AsyncMongoClient(uri, **options)
    from motor.motor_asyncio import AsyncIOMotorClient

    return AsyncIOMotorClient(uri, **options)


async def _close(client: Any) -> None:
    closing = client.close()
    if asyncio.iscoroutine(closing):
        await closing


def _frozen(server: LocalMongod) -> Any:
    assert server.process is not None
    pid = server.process.pid

    class Frozen:
        def __enter__(self) -> None:
            freeze(pid)

        def __exit__(self, *exc: object) -> None:
            os.kill(pid, signal.SIGCONT)

    return Frozen()


@pytest.mark.parametrize("driver", ["sync", "async", "motor"])
def test_a_frozen_server_fails_within_the_bound_then_recovers(
    driver: str, fault_server: LocalMongod, fault_db: Database[Any], event_loop_thread: EventLoopThread
) -> None:
    seed_old_records(fault_db, 2)
    if driver == "sync":
        with fault_server.client() as client:
            store = UserFiles(client[fault_db.name], timeout_seconds=BOUND)
            patient = UserFiles(client[fault_db.name], timeout_seconds=PATIENT)
            assert len(patient.get_user_files(USER)) == 2  # connected before the freeze
            with _frozen(fault_server):
                _assert_bounded(lambda: store.get_user_files(USER), "get_user_files")
                _assert_bounded(lambda: store.save_user_file(file_data(USER, 9)), "save_user_file")
            assert len(patient.get_user_files(USER)) >= 2  # back once the server is
        return

    async def scenario() -> None:
        client = _async_client(driver, fault_server.uri)
        store = AsyncUserFiles(client[fault_db.name], timeout_seconds=BOUND)
        patient = AsyncUserFiles(client[fault_db.name], timeout_seconds=PATIENT)
        try:
            assert len(await patient.get_user_files(USER)) == 2
            with _frozen(fault_server):
                calls: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
                    ("get_user_files", lambda: store.get_user_files(USER)),
                    ("save_user_file", lambda: store.save_user_file(file_data(USER, 9))),
                ]
                for operation, call in calls:
                    started = time.monotonic()
                    with pytest.raises(DatabaseUnavailable, match=rf"{operation}: .* within 0.5 s"):
                        await call()
                    assert time.monotonic() - started < HANG
            assert len(await patient.get_user_files(USER)) >= 2
        finally:
            await _close(client)

    event_loop_thread.run(scenario())


def test_a_slow_answer_is_cut_at_the_bound(
    fault_server: LocalMongod, admin: MongoClient[dict[str, Any]], fault_db: Database[Any]
) -> None:
    with fault_server.client(appname=APP) as client:
        store = UserFiles(client[fault_db.name], timeout_seconds=BOUND)
        UserFiles(client[fault_db.name], timeout_seconds=PATIENT).get_user_files(USER)  # connected
        fail_next(admin, "find", blockConnection=True, blockTimeMS=1500)
        _assert_bounded(lambda: store.get_user_files(USER), "get_user_files")


# --- interrupted saves: the record is saved, the evictions done so far are reported -------------


def test_connection_lost_between_two_evictions_reports_the_first(
    fault_server: LocalMongod, admin: MongoClient[dict[str, Any]], fault_db: Database[Any]
) -> None:
    old = seed_old_records(fault_db, 4)  # limit 2: saving a fifth evicts the three oldest
    # findAndModify #1 is the write, #2 the first eviction: break #3 (connection closed).
    listener = AfterNth("findAndModify", 2, lambda: fail_next(admin, "findAndModify", closeConnection=True))
    with fault_server.client(appname=APP, event_listeners=[listener]) as client:
        store = UserFiles(client[fault_db.name], max_files_per_user=2, timeout_seconds=5)
        with pytest.raises(SaveIncomplete) as info:
            store.save_user_file(file_data(USER, 50))
    error = info.value
    assert isinstance(error.__cause__, DatabaseUnavailable)
    assert error.record["file_id"] == file_data(USER, 50)["file_id"]
    assert [r["file_id"] for r in error.evicted] == [old[0]]
    assert [r["file_id"] for r in error.uncertain] == [old[1]]
    stored = set(fault_db["user_files"].distinct("file_id"))
    assert old[0] not in stored
    assert file_data(USER, 50)["file_id"] in stored
    # Nothing is lost for good: the next save evicts (and reports) what is still past the limit.
    store = UserFiles(fault_db, max_files_per_user=2)
    later = {r["file_id"] for r in store.save_user_file(file_data(USER, 51))}
    assert later == set(old[1:])
    assert len(store.get_user_files(USER)) == 2


def test_the_bound_reached_during_eviction_is_save_incomplete(
    fault_server: LocalMongod, admin: MongoClient[dict[str, Any]], fault_db: Database[Any]
) -> None:
    old = seed_old_records(fault_db, 2)
    listener = AfterNth(
        "findAndModify", 1, lambda: fail_next(admin, "findAndModify", blockConnection=True, blockTimeMS=4000)
    )
    with fault_server.client(appname=APP, event_listeners=[listener]) as client:
        client.admin.command("ping")
        # 2 s: ample for the write and the listing, cut during the blocked eviction.
        store = UserFiles(client[fault_db.name], max_files_per_user=1, timeout_seconds=2)
        started = time.monotonic()
        with pytest.raises(SaveIncomplete) as info:
            store.save_user_file(file_data(USER, 50))
        assert time.monotonic() - started < HANG
    assert isinstance(info.value.__cause__, DatabaseUnavailable)
    assert info.value.evicted == []
    assert [r["file_id"] for r in info.value.uncertain] == [old[0]]


@pytest.mark.parametrize("driver", ["async", "motor"])
def test_a_cancelled_async_save_reports_its_evictions(
    driver: str,
    fault_server: LocalMongod,
    admin: MongoClient[dict[str, Any]],
    fault_db: Database[Any],
    event_loop_thread: EventLoopThread,
) -> None:
    old = seed_old_records(fault_db, 3)  # limit 2: saving one more evicts the two oldest
    loop = event_loop_thread.loop
    task_box: list[asyncio.Task[Any]] = []

    class SlowEvictionThenCancel(AfterNth):
        # After the write, the first eviction is made to take 1.5 s on the server; once it is
        # sent, the save is cancelled while it is in flight.
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == "findAndModify" and self.seen == 1:
                loop.call_soon_threadsafe(lambda: loop.call_later(0.3, task_box[0].cancel))

    listener = SlowEvictionThenCancel(
        "findAndModify", 1, lambda: fail_next(admin, "findAndModify", blockConnection=True, blockTimeMS=1500)
    )

    async def scenario() -> SaveIncomplete:
        client = _async_client(driver, fault_server.uri, appname=APP, event_listeners=[listener])
        try:
            store = AsyncUserFiles(client[fault_db.name], max_files_per_user=2, timeout_seconds=10)
            task = asyncio.ensure_future(store.save_user_file(file_data(USER, 50)))
            task_box.append(task)
            try:
                await task
            except SaveIncomplete as exc:
                return exc
            raise AssertionError("the cancelled save did not raise SaveIncomplete")
        finally:
            await _close(client)

    error = event_loop_thread.run(scenario())
    assert isinstance(error.__cause__, asyncio.CancelledError)
    # The eviction in flight when the cancel came was waited for, so it is reported, not lost.
    assert [r["file_id"] for r in error.evicted] == [old[0]]
    assert error.uncertain == []
    stored = set(fault_db["user_files"].distinct("file_id"))
    assert old[0] not in stored
    assert file_data(USER, 50)["file_id"] in stored


def test_every_eviction_is_reported_once_across_interrupted_saves(
    fault_server: LocalMongod, admin: MongoClient[dict[str, Any]], fault_db: Database[Any]
) -> None:
    # Break the connection under many saves; every record ever saved ends up stored, reported
    # evicted (normally or in SaveIncomplete.evicted), or reported uncertain and then gone or kept.
    breaks = [0]
    lock = threading.Lock()

    def maybe_break() -> None:
        with lock:
            breaks[0] += 1
            if breaks[0] % 3 == 0:
                fail_next(admin, "findAndModify", closeConnection=True)

    listener = AfterNth("findAndModify", 0, lambda: None)
    listener.succeeded = lambda event: maybe_break() if event.command_name == "findAndModify" else None  # type: ignore[method-assign]
    reported: list[str] = []
    uncertain: set[str] = set()
    cut: set[str] = set()
    with fault_server.client(appname=APP, event_listeners=[listener]) as client:
        store = UserFiles(client[fault_db.name], max_files_per_user=3, timeout_seconds=5)
        for n in range(18):
            try:
                reported += [r["file_id"] for r in store.save_user_file(file_data(USER, n))]
            except SaveIncomplete as exc:
                reported += [r["file_id"] for r in exc.evicted]
                uncertain |= {r["file_id"] for r in exc.uncertain}
            except DatabaseUnavailable:
                cut.add(file_data(USER, n)["file_id"])  # the write itself was cut (not run)
    admin.admin.command("configureFailPoint", "failCommand", mode="off")
    stored = set(fault_db["user_files"].distinct("file_id"))
    assert breaks[0] >= 6
    assert len(reported) == len(set(reported)), "an eviction was reported twice"
    assert not stored & set(reported)
    saved = {file_data(USER, n)["file_id"] for n in range(18)}
    assert saved - cut == stored | set(reported), "a record vanished unreported"
    assert uncertain <= stored | set(reported)


def _cancel_while_blocked(
    fault_server: LocalMongod,
    admin: MongoClient[dict[str, Any]],
    event_loop_thread: EventLoopThread,
    command: str,
    make_call: Callable[[AsyncUserFiles], Awaitable[Any]],
    db_name: str,
) -> BaseException:
    """Run ``make_call`` with the victim's next ``command`` blocked 1 s; cancel the call 0.3 s
    after that command was sent."""
    loop = event_loop_thread.loop
    task_box: list[asyncio.Future[Any]] = []

    class CancelWhenSent(AfterNth):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            if event.command_name == command and task_box:
                loop.call_soon_threadsafe(lambda: loop.call_later(0.3, task_box[0].cancel))

    async def scenario() -> BaseException:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            fault_server.uri, appname=APP, event_listeners=[CancelWhenSent(command, 0, lambda: None)]
        )
        try:
            store = AsyncUserFiles(client[db_name], timeout_seconds=10)
            await store.claimed_paths(USER, ["/warm-up"])  # connected before the blocked call
            fail_next(admin, command, blockConnection=True, blockTimeMS=1000)
            task = asyncio.ensure_future(make_call(store))
            task_box.append(task)
            try:
                await task
            except BaseException as exc:
                return exc
            raise AssertionError("the cancelled call returned")
        finally:
            await client.close()

    return event_loop_thread.run(scenario())


def test_a_cancel_during_the_write_reports_the_saved_record(
    fault_server: LocalMongod,
    admin: MongoClient[dict[str, Any]],
    fault_db: Database[Any],
    event_loop_thread: EventLoopThread,
) -> None:
    error = _cancel_while_blocked(
        fault_server, admin, event_loop_thread, "findAndModify",
        lambda store: store.save_user_file(file_data(USER, 1)), fault_db.name,
    )  # fmt: skip
    # The write in flight was waited for: the record exists, so the caller hears about it.
    assert isinstance(error, SaveIncomplete)
    assert error.record["file_id"] == file_data(USER, 1)["file_id"]
    assert (error.evicted, error.uncertain) == ([], [])
    assert fault_db["user_files"].count_documents({}) == 1


def test_a_cancelled_read_is_cancelled(
    fault_server: LocalMongod,
    admin: MongoClient[dict[str, Any]],
    fault_db: Database[Any],
    event_loop_thread: EventLoopThread,
) -> None:
    error = _cancel_while_blocked(
        fault_server,
        admin,
        event_loop_thread,
        "find",
        lambda store: store.get_user_files(USER),
        fault_db.name,
    )
    assert isinstance(error, asyncio.CancelledError)
