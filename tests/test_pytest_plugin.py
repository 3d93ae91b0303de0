"""The pytest plugin users load in their own tests (``userfiles_db.pytest_plugin``), run with pytester.

Each test writes a small test file for a nested pytest session (in process: the installed plugin is
loaded through its ``pytest11`` entry point, exactly as in a user's project) and asserts its outcome.
Real-server runs reuse this session's mongod through ``--userfiles-uri``, except the one that proves
the plugin starts the embedded server on its own.
"""

from __future__ import annotations

import importlib.metadata
import re

import pytest

from userfiles_db.local_server import LocalMongod

pytest_plugins = ["pytester"]

ASYNC_INI = """
[pytest]
asyncio_default_fixture_loop_scope = function
"""

SYNC_TESTS = """
import pytest


def record(file_id, user_id=7):
    return {"file_id": file_id, "user_id": user_id, "filename": "a.csv", "file_type": "csv",
            "file_path": f"/files/{user_id}/{file_id}", "size": 10}


def test_store_roundtrip_and_expiry(userfiles_store, userfiles_clock, userfiles_database, userfiles_backend):
    print("BACKEND", userfiles_backend, "DB", userfiles_database.name)
    assert userfiles_store.save_user_file(record("f1")) == []
    assert [r["file_id"] for r in userfiles_store.get_user_files(7)] == ["f1"]
    assert userfiles_database["user_files"].count_documents({}) == 1
    userfiles_clock.advance(hours=49)  # past the default 48 h expiry
    assert userfiles_store.get_user_files(7) == []


def test_indexes_are_declared(userfiles_database):
    names = set(userfiles_database["user_files"].index_information())
    assert {"file_id_1", "user_id_1_expires_at_-1", "expires_at_1"} <= names


def test_limit_holds(userfiles_store, userfiles_clock):
    for n in range(21):
        userfiles_clock.advance(seconds=1)
        evicted = userfiles_store.save_user_file(record(f"f{n}"))
    assert [r["file_id"] for r in evicted] == ["f0"]
    assert len(userfiles_store.get_user_files(7)) == 20
"""


@pytest.fixture(autouse=True)
def _nested_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini(ASYNC_INI)  # as a user's project would set it: no pytest-asyncio warning


def _records_from(output: str) -> dict[str, str]:
    found = re.findall(r"BACKEND (\w+) DB (\w+)", output)
    assert found, output
    backend, db = found[0]
    return {"backend": backend, "db": db}


def test_fixtures_run_on_mongomock_by_default(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=SYNC_TESTS)
    result = pytester.runpytest("-s")
    result.assert_outcomes(passed=3)
    assert _records_from(result.stdout.str())["backend"] == "mongomock"


def test_option_runs_every_test_on_the_given_server(pytester: pytest.Pytester, mongod: LocalMongod) -> None:
    pytester.makepyfile(test_user=SYNC_TESTS)
    result = pytester.runpytest("-s", "--userfiles-mongod", f"--userfiles-uri={mongod.uri}")
    result.assert_outcomes(passed=3)
    used = _records_from(result.stdout.str())
    assert used["backend"] == "mongod"
    with mongod.client() as client:  # the test's database was dropped afterwards
        assert used["db"] not in client.list_database_names()


def test_uri_from_the_environment(
    pytester: pytest.Pytester, mongod: LocalMongod, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USERFILES_TEST_URI", mongod.uri)
    pytester.makepyfile(test_user=SYNC_TESTS)
    result = pytester.runpytest("-s", "--userfiles-mongod", "-k", "roundtrip")
    result.assert_outcomes(passed=1)
    assert _records_from(result.stdout.str())["backend"] == "mongod"


MARKED_TESTS = """
import pytest
from pymongo.errors import WriteError


@pytest.mark.userfiles_mongod
def test_real_server_enforces_the_validator(userfiles_database, userfiles_backend):
    assert userfiles_backend == "mongod"
    with pytest.raises(WriteError) as caught:
        userfiles_database["user_files"].insert_one({"file_id": "x", "user_id": "not a number"})
    assert caught.value.code == 121  # DocumentValidationFailure: the schema was applied
    options = userfiles_database["user_files"].options()
    assert options["validationLevel"] == "strict"
    ttl = userfiles_database["user_files"].index_information()["expires_at_1"]
    assert ttl["expireAfterSeconds"] == 0


def test_unmarked_stays_on_mongomock(userfiles_backend):
    assert userfiles_backend == "mongomock"
"""


def test_marker_asks_for_the_real_server(pytester: pytest.Pytester, mongod: LocalMongod) -> None:
    pytester.makepyfile(test_user=MARKED_TESTS)
    result = pytester.runpytest("--strict-markers", f"--userfiles-uri={mongod.uri}")
    result.assert_outcomes(passed=2)


@pytest.mark.mongod  # starts a server of its own
def test_embedded_server_is_started_when_no_uri_is_given(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("USERFILES_TEST_URI", raising=False)
    pytester.makepyfile(
        test_user="""
        import pytest

        @pytest.mark.userfiles_mongod
        def test_embedded(userfiles_mongod_uri, userfiles_store, userfiles_database):
            assert userfiles_mongod_uri.startswith("mongodb://127.0.0.1:")
            userfiles_store.save_user_file({"file_id": "e1", "user_id": 1, "filename": "a",
                "file_type": "txt", "file_path": "/f/1/a", "size": 1})
            assert userfiles_database.client.admin.command("buildInfo")["version"].startswith("6.")
            assert userfiles_database["user_files"].count_documents({}) == 1
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)


ASYNC_TESTS = """
import pytest


@pytest.mark.asyncio
async def test_async_store(userfiles_async_store, userfiles_database, userfiles_clock, userfiles_backend):
    print("BACKEND", userfiles_backend, "DB", userfiles_database.name)
    evicted = await userfiles_async_store.save_user_file({"file_id": "a1", "user_id": 5,
        "filename": "a", "file_type": "txt", "file_path": "/f/5/a", "size": 3})
    assert evicted == []
    # the async store writes into the very database the sync fixture shows
    assert userfiles_database["user_files"].find_one({"file_id": "a1"})["size"] == 3
    assert [r["file_id"] for r in await userfiles_async_store.get_user_files(5)] == ["a1"]
    assert (await userfiles_async_store.get_file("a1", user_id=6)) is None
    userfiles_clock.advance(hours=49)
    assert await userfiles_async_store.get_user_files(5) == []
    assert await userfiles_async_store.delete_expired_files() == 1
    assert userfiles_database["user_files"].count_documents({}) == 0
"""


@pytest.mark.parametrize("backend", ["mongomock", "mongod"])
def test_async_store_on_both_backends(pytester: pytest.Pytester, mongod: LocalMongod, backend: str) -> None:
    pytester.makepyfile(test_user=ASYNC_TESTS)
    args = ["-s", f"--userfiles-uri={mongod.uri}"] + (["--userfiles-mongod"] if backend == "mongod" else [])
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    assert _records_from(result.stdout.str())["backend"] == backend


def test_no_collision_with_a_projects_own_fixtures(pytester: pytest.Pytester) -> None:
    # This project's conftest (and users' ones) define mongod, real_db, clock, store, db...
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def mongod():
            return "project's own"

        @pytest.fixture
        def clock():
            return "project's own"

        @pytest.fixture
        def store():
            return "project's own"
        """
    )
    pytester.makepyfile(
        test_user="""
        def test_both(mongod, clock, store, userfiles_store, userfiles_clock):
            assert (mongod, clock, store) == ("project's own",) * 3
            assert userfiles_store.get_user_files(1) == []
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)
    listing = pytester.runpytest("--fixtures").stdout.str()
    section = listing.split("fixtures defined from userfiles_db.pytest_plugin", 1)[1]
    section = section.split("fixtures defined from", 1)[0]
    names = set(re.findall(r"^(\w+)(?: \[session scope\])? -- ", section, re.M)) or set(
        re.findall(r"^(\w+)", section, re.M)
    )
    assert names >= {"userfiles_store", "userfiles_async_store", "userfiles_database", "userfiles_clock"}
    assert all(name.startswith("userfiles_") for name in names), names
    assert "userfiles_db" not in names  # a fixture must not shadow the package in a test's body
    help_text = pytester.runpytest("--help").stdout.str()
    options = set(re.findall(r"--userfiles[\w-]*", help_text))
    assert options == {"--userfiles-mongod", "--userfiles-uri"}


def test_registered_as_a_pytest11_entry_point(pytester: pytest.Pytester) -> None:
    entry = [e for e in importlib.metadata.entry_points(group="pytest11") if e.name == "userfiles_db"]
    assert [e.value for e in entry] == ["userfiles_db.pytest_plugin"]
    pytester.makepyfile(test_user="def test_x(userfiles_store):\n    pass\n")
    result = pytester.runpytest("-p", "no:userfiles_db")  # users can switch it off
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'userfiles_store' not found*"])


def test_missing_mongomock_is_named(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import sys\nsys.modules['mongomock'] = None  # as if not installed\n")
    pytester.makepyfile(test_user="def test_x(userfiles_store):\n    pass\n")
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*mongomock*is not installed*--userfiles-mongod*"])


def test_userfiles_clock_is_aware_and_refuses_naive() -> None:
    import datetime as dt

    from userfiles_db.pytest_plugin import UserFilesClock

    clock = UserFilesClock(dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc))
    assert clock() == dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    clock.advance(hours=1)
    assert clock().hour == 13
    with pytest.raises(ValueError, match="aware"):
        UserFilesClock(dt.datetime(2026, 1, 1))
