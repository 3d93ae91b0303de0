"""Fixtures: one real mongod per test session (started only when a test needs it), a fresh
database per test, and mongomock for the fast logic tests."""

from __future__ import annotations

import asyncio
import datetime as dt
import inspect
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import mongomock
import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from userfiles_db import AsyncUserFiles, UserFiles
from userfiles_db.clock import UTC
from userfiles_db.local_server import LocalMongod, MongodNotFound, find_mongod
from userfiles_db.migrate.steps import create_collection, create_indexes
from userfiles_db.schema import load_schema

REAL_SERVER_FIXTURES = {
    "mongod", "mongo_client", "real_db", "real_user_files_db", "replica_set", "async_client",
    "strict_mongod", "motor_client",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use the real server carry the "mongod" marker, so `-m "not mongod"` runs the
    # fast ones alone; parametrised "any backend" tests get it only for their mongod case.
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec else {}
        backend = params.get("backend_db") or params.get("backend") or ""
        if names & REAL_SERVER_FIXTURES or backend.startswith("mongod"):
            item.add_marker(pytest.mark.mongod)


@pytest.fixture(scope="session")
def mongod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMongod]:
    """The session's real MongoDB server (6.0.5 from the test extra), on loopback."""
    try:
        find_mongod()
    except MongodNotFound as exc:
        pytest.fail(f"the real-server tests need mongod: {exc}", pytrace=False)
    server = LocalMongod(tmp_path_factory.mktemp("mongod"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def replica_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMongod]:
    """A single-node replica set (transactions work there), started when first needed."""
    server = LocalMongod(tmp_path_factory.mktemp("mongod-rs"), replica_set="rs0")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def strict_mongod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMongod]:
    """A server that refuses any query without an index (``notablescan=1``)."""
    server = LocalMongod(tmp_path_factory.mktemp("mongod-strict"), set_parameters={"notablescan": 1})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_client(mongod: LocalMongod) -> Iterator[MongoClient[dict[str, Any]]]:
    # No tz_aware, as the bot's client: the store must hand back aware datetimes regardless.
    with mongod.client() as client:
        yield client


@pytest.fixture
def real_db(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[Database[Any]]:
    """A fresh, empty database on the real server, dropped afterwards."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    yield mongo_client[name]
    mongo_client.drop_database(name)


@pytest.fixture
def mock_db() -> Database[Any]:
    db: Database[Any] = mongomock.MongoClient()["test"]
    return db


@pytest.fixture
def real_user_files_db(real_db: Database[Any]) -> Database[Any]:
    """A real database with user_files created from schema/ (validator, indexes, TTL)."""
    create_collection(real_db, load_schema())
    return real_db


@pytest.fixture(params=["mongomock", "mongod"])
def backend_db(request: pytest.FixtureRequest) -> Database[Any]:
    """The same test on mongomock and on the real server, with the declared schema applied
    (mongomock gets the indexes only: it cannot run validators)."""
    if request.param == "mongod":
        db: Database[Any] = request.getfixturevalue("real_user_files_db")
        return db
    db = request.getfixturevalue("mock_db")
    create_indexes(db["user_files"], load_schema())
    return db


class MovableClock:
    """A clock tests move by hand; starts at the real now so TTL emulation sees plausible dates."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.now = (start or dt.datetime.now(UTC)).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


T = TypeVar("T")


class EventLoopThread:
    """An asyncio loop in a thread, so synchronous test bodies can drive the async API."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


class SyncOverAsync:
    """An ``AsyncUserFiles`` whose coroutine methods are called synchronously: the shared test
    bodies run unchanged against the async API."""

    def __init__(self, store: AsyncUserFiles, loop: EventLoopThread) -> None:
        self.store = store
        self.loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.store, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute
        return lambda *args, **kwargs: self.loop.run(attribute(*args, **kwargs))


@pytest.fixture(scope="session")
def event_loop_thread() -> Iterator[EventLoopThread]:
    loop = EventLoopThread()
    yield loop
    loop.stop()


@pytest.fixture(scope="session")
def async_client(
    mongod: LocalMongod, event_loop_thread: EventLoopThread
) -> Iterator[AsyncMongoClient[dict[str, Any]]]:
    async def connect() -> AsyncMongoClient[dict[str, Any]]:
        return AsyncMongoClient(mongod.uri)

    client = event_loop_thread.run(connect())
    yield client
    event_loop_thread.run(client.close())


@dataclass
class Backend:
    """A database to inspect directly, and a way to build the API under test on it."""

    name: str
    db: Database[Any]
    make: Callable[..., Any]


@pytest.fixture(scope="session")
def motor_client(mongod: LocalMongod, event_loop_thread: EventLoopThread) -> Iterator[Any]:
    """The bot's current driver, Motor, on the test loop."""
    from motor.motor_asyncio import AsyncIOMotorClient

    async def connect() -> Any:
        return AsyncIOMotorClient(mongod.uri)

    client = event_loop_thread.run(connect())
    yield client
    client.close()


@pytest.fixture(params=["mongomock", "mongod", "mongod-async", "mongod-motor"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The shared behavioural tests run four times: sync API on mongomock, sync API on the real
    server, async API on the real server through ``AsyncMongoClient`` and through Motor."""
    if request.param == "mongomock":
        db: Database[Any] = request.getfixturevalue("mock_db")
        create_indexes(db["user_files"], load_schema())
        return Backend(request.param, db, lambda **kw: UserFiles(db, **kw))
    db = request.getfixturevalue("real_user_files_db")
    if request.param == "mongod":
        return Backend(request.param, db, lambda **kw: UserFiles(db, **kw))
    loop: EventLoopThread = request.getfixturevalue("event_loop_thread")
    fixture = "async_client" if request.param == "mongod-async" else "motor_client"
    client: Any = request.getfixturevalue(fixture)
    return Backend(request.param, db, lambda **kw: SyncOverAsync(AsyncUserFiles(client[db.name], **kw), loop))


@pytest.fixture(autouse=True)
def _forget_registered_secrets() -> Iterator[None]:
    """Library calls of ``redact`` register passwords until the next CLI command forgets them: a
    password a hypothesis test made up ("none", "mov") must not mask words another test checks."""
    yield
    from userfiles_db.migrate.config import forget_secrets

    forget_secrets()
