"""The TTL health report (``ttl_report``, ``migrate.py ttl``) on the real server.

The session server's monitor deletes expired records within a second or two. To see a backlog
without racing it, the tests either measure against a ``now`` far ahead of the server's clock
(records the server will not touch for hours count as overdue), switch the monitor off for the
test (``monitor_off``, always switched back on), or use a server of their own whose monitor
sleeps an hour (``quiet_mongod``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from click.testing import CliRunner, Result
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

from userfiles_db.cli import State, cli
from userfiles_db.clock import to_bson_time
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate.ttl import Monitor, Overdue, TTLIndex, ttl_report

HOUR = dt.timedelta(hours=1)


def server_now(db: Database[Any]) -> dt.datetime:
    """The server's clock, aware UTC, whole seconds (so figures derived from it are exact)."""
    return to_bson_time(db.client.admin.command("hello")["localTime"]).replace(microsecond=0)


def ttl_metrics(client: MongoClient[dict[str, Any]]) -> tuple[int, int]:
    ttl = client.admin.command("serverStatus")["metrics"]["ttl"]
    return int(ttl["passes"]), int(ttl["deletedDocuments"])


def invoke(uri: str, db: str, cwd: Path, *args: str) -> Result:
    state = State(environ={"MONGODB_URI": uri, "MONGODB_DB": db}, cwd=cwd)
    return CliRunner().invoke(cli, ["ttl", *args], obj=state, catch_exceptions=False)


@pytest.fixture
def monitor_off(mongo_client: MongoClient[dict[str, Any]]) -> Iterator[None]:
    """The session server's TTL monitor switched off for one test, and always back on."""
    admin = mongo_client.admin
    admin.command("setParameter", 1, ttlMonitorEnabled=False)
    try:
        time.sleep(1.2)  # one period (1 s): a pass that began before the switch has ended
        yield
    finally:
        admin.command("setParameter", 1, ttlMonitorEnabled=True)


@pytest.fixture(scope="module")
def quiet_mongod() -> Iterator[LocalMongod]:
    """A server whose TTL monitor is enabled but sleeps an hour: overdue records stay put."""
    with LocalMongod(ttl_monitor_sleep_secs=3600) as server:
        yield server


@pytest.fixture
def quiet_db(quiet_mongod: LocalMongod) -> Iterator[Database[Any]]:
    with quiet_mongod.client() as client:
        name = f"t_{uuid.uuid4().hex[:16]}"
        yield client[name]
        client.drop_database(name)


# --- the library ---------------------------------------------------------------------------


def test_overdue_not_a_date_null_and_missing(real_db: Database[Any]) -> None:
    t = server_now(real_db)
    files = real_db["user_files"]
    files.create_index("expires_at", expireAfterSeconds=0)
    files.insert_many([
        {"_id": "a", "expires_at": t + 1 * HOUR},
        {"_id": "b", "expires_at": t + 2 * HOUR},
        {"_id": "c", "expires_at": t + 5 * HOUR},
        {"_id": "iso", "expires_at": "2020-01-01T00:00:00"},  # a string date: never deleted
        {"_id": "int", "expires_at": 1700000000},
        {"_id": "never", "expires_at": None},
        {"_id": "missing"},
    ])  # fmt: skip
    real_db.create_collection("live_files", viewOn="user_files", pipeline=[])  # a view: skipped
    real_db["plain"].create_index("expires_at")  # not a TTL index

    report = ttl_report(real_db, now=t + 3 * HOUR)

    assert (report.database, report.now, report.now_source) == (real_db.name, t + 3 * HOUR, "argument")
    assert report.indexes == (
        TTLIndex(
            collection="user_files", index="expires_at_1", field="expires_at", expire_after_seconds=0,
            clustered=False, partial_filter=None, overdue=2,
            oldest_overdue=Overdue("a", t + 1 * HOUR, 7200.0),
            not_a_date=2, null_or_missing=2, total=7,
        ),
    )  # fmt: skip
    assert report.notes == ()
    assert report.max_seconds_overdue == 7200.0
    # before any expiry: nothing overdue, no oldest
    (early,) = ttl_report(real_db, now=t).indexes
    assert (early.overdue, early.oldest_overdue, early.not_a_date, early.null_or_missing) == (0, None, 2, 2)


def test_a_non_zero_expire_after_seconds_counts_from_the_field_plus_the_ttl(real_db: Database[Any]) -> None:
    t = server_now(real_db)
    sessions = real_db["sessions"]
    sessions.create_index("created_at", expireAfterSeconds=3600)
    sessions.insert_many([{"_id": n, "created_at": t + n * HOUR} for n in range(3)])

    # now - 3600 s = t + 30 min: only the record created at t has passed created_at + 1 h
    (index,) = ttl_report(real_db, now=t + 90 * dt.timedelta(minutes=1)).indexes
    assert (index.index, index.field, index.expire_after_seconds) == ("created_at_1", "created_at", 3600)
    assert (index.overdue, index.oldest_overdue) == (1, Overdue(0, t, 1800.0))
    # the boundary is inclusive, as the server's: created_at == now - ttl is overdue by 0 s
    (index,) = ttl_report(real_db, now=t + 2 * HOUR).indexes
    assert (index.overdue, index.oldest_overdue) == (2, Overdue(0, t, 3600.0))
    (index,) = ttl_report(real_db, now=t + 2 * HOUR - dt.timedelta(milliseconds=1)).indexes
    assert index.overdue == 1


def test_a_clustered_collection_with_expire_after_seconds(real_db: Database[Any]) -> None:
    t = server_now(real_db)
    real_db.create_collection(
        "events", clusteredIndex={"key": {"_id": 1}, "unique": True}, expireAfterSeconds=600
    )
    events = real_db["events"]
    # an ObjectId _id never expires, even one made from an old time: the server goes by dates only
    events.insert_many(
        [{"_id": t + HOUR}, {"_id": t + 2 * HOUR}, {"_id": "x"}, {"_id": ObjectId.from_datetime(t)}]
    )
    events.insert_one({"_id": None})

    (index,) = ttl_report(real_db, now=t + 3 * HOUR).indexes

    assert index == TTLIndex(
        collection="events", index="_id_", field="_id", expire_after_seconds=600, clustered=True,
        partial_filter=None, overdue=2, oldest_overdue=Overdue(t + HOUR, t + HOUR, 6600.0),
        not_a_date=2, null_or_missing=1, total=5,
    )  # fmt: skip


def test_arrays_go_by_their_earliest_date(real_db: Database[Any]) -> None:
    """As the server: an array with a date expires at its earliest date; one without never does."""
    t = server_now(real_db)
    items = real_db["items"]
    items.create_index("expires_at", expireAfterSeconds=0)
    items.insert_many([
        {"_id": "dates", "expires_at": [t + 5 * HOUR, t + HOUR]},
        {"_id": "late", "expires_at": [t + 4 * HOUR, t + 2 * HOUR]},
        {"_id": "future", "expires_at": [t + 4 * HOUR]},
        {"_id": "strings", "expires_at": ["2020-01-01"]},
        {"_id": "empty", "expires_at": []},
        {"_id": "null", "expires_at": [None]},
    ])  # fmt: skip

    (index,) = ttl_report(real_db, now=t + 3 * HOUR).indexes

    assert (index.overdue, index.oldest_overdue) == (2, Overdue("dates", t + HOUR, 7200.0))
    assert (index.not_a_date, index.null_or_missing, index.total) == (2, 1, 6)


def test_partial_sparse_special_and_time_series(real_db: Database[Any]) -> None:
    t = server_now(real_db)
    tmp = real_db["tmp"]  # only records matching the filter are indexed, so only they expire
    tmp.create_index("e", expireAfterSeconds=0, partialFilterExpression={"kind": "tmp"})
    tmp.insert_many([
        {"_id": "in", "e": t + HOUR, "kind": "tmp"}, {"e": t + HOUR}, {"kind": "tmp"},
        {"e": "s", "kind": "tmp"}, {"e": "s"},
    ])  # fmt: skip
    sparse = real_db["sparse"]
    sparse.create_index("f", expireAfterSeconds=0, sparse=True)
    sparse.insert_many([{"_id": "dated", "f": t + HOUR}, {"f": None}, {}, {"f": "s"}])
    real_db["hashed"].create_index([("g", "hashed")], expireAfterSeconds=0)  # accepted, never acted on
    real_db.create_collection("metrics", timeseries={"timeField": "t"}, expireAfterSeconds=60)

    report = ttl_report(real_db, now=t + 2 * HOUR)

    assert report.indexes == (
        TTLIndex("sparse", "f_1", "f", 0, False, None, 1, Overdue("dated", t + HOUR, 3600.0), 1, None, 4),
        TTLIndex("tmp", "e_1", "e", 0, False, {"kind": "tmp"}, 1, Overdue("in", t + HOUR, 3600.0), 1, 1, 5),
    )  # fmt: skip
    assert report.notes == (
        "hashed.g_hashed is a hashed index: the TTL monitor skips special indexes, so nothing expires "
        "through it",
        "metrics is a time-series collection with expireAfterSeconds 60: its buckets expire as a whole; "
        "not reported",
        "sparse.f_1 is sparse: records without f are not in it, so null_or_missing is unknown",
    )


def test_only_the_named_collections(real_db: Database[Any]) -> None:
    t = server_now(real_db)
    for name in ("a", "b"):
        real_db[name].create_index("e", expireAfterSeconds=0)
        real_db[name].insert_one({"e": t + HOUR})
    report = ttl_report(real_db, collections=["b", "nope"], now=t + 2 * HOUR)
    assert [(i.collection, i.overdue) for i in report.indexes] == [("b", 1)]
    assert report.notes == ("collection nope does not exist",)
    assert "nope" not in real_db.list_collection_names()  # read-only


def test_a_database_without_ttl_index(real_db: Database[Any]) -> None:
    real_db["plain"].create_index("expires_at")
    real_db["plain"].insert_one({"expires_at": None})
    report = ttl_report(real_db)
    assert (report.indexes, report.notes, report.max_seconds_overdue) == ((), (), None)


def test_now_is_the_servers_clock_by_default(real_db: Database[Any]) -> None:
    before = server_now(real_db)
    report = ttl_report(real_db)
    after = server_now(real_db) + dt.timedelta(seconds=1)
    assert report.now_source == "server"
    assert before <= report.now <= after
    assert report.now.utcoffset() == dt.timedelta(0)
    with pytest.raises(TypeError, match="aware"):
        ttl_report(real_db, now=dt.datetime(2030, 1, 1))


def test_to_dict_is_json_ready(real_db: Database[Any]) -> None:
    t = server_now(real_db)
    real_db["u"].create_index("expires_at", expireAfterSeconds=0)
    oid = ObjectId()
    real_db["u"].insert_one({"_id": oid, "expires_at": t + HOUR})
    data = json.loads(json.dumps(ttl_report(real_db, now=t + 2 * HOUR).to_dict()))  # no default=
    assert data["now"] == (t + 2 * HOUR).isoformat()
    assert data["indexes"][0]["oldest_overdue"] == {
        "id": str(oid), "value": (t + HOUR).isoformat(), "seconds_overdue": 3600.0,
    }  # fmt: skip
    assert (t + HOUR).isoformat().endswith("+00:00")


# --- the server's monitor --------------------------------------------------------------------


def test_the_report_sees_the_monitor_pass_and_delete(
    real_db: Database[Any], mongo_client: MongoClient[dict[str, Any]]
) -> None:
    before = ttl_report(real_db).monitor
    assert (before.enabled, before.sleep_secs, before.is_primary, before.sub_passes) == (True, 1, True, None)
    real_db["gone"].create_index("e", expireAfterSeconds=0)
    real_db["gone"].insert_many([{"e": server_now(real_db) - HOUR} for _ in range(3)])
    deadline = time.monotonic() + 20
    while real_db["gone"].count_documents({}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert real_db["gone"].count_documents({}) == 0
    time.sleep(2.2)  # at least one more whole pass (1 s period)
    after = ttl_report(real_db).monitor
    assert after.passes >= (before.passes or 0) + 2  # type: ignore[operator]
    assert after.deleted_documents >= (before.deleted_documents or 0) + 3  # type: ignore[operator]
    assert (after.passes, after.deleted_documents) <= ttl_metrics(mongo_client)


def test_a_disabled_monitor_makes_no_pass(real_db: Database[Any], monitor_off: None) -> None:
    before = ttl_report(real_db).monitor
    time.sleep(2.2)
    after = ttl_report(real_db).monitor
    assert (before.enabled, after.enabled) == (False, False)
    assert (after.passes, after.deleted_documents) == (before.passes, before.deleted_documents)


def test_counts_use_the_index_on_a_notablescan_server(strict_mongod: LocalMongod) -> None:
    with strict_mongod.client() as client:
        db = client[f"t_{uuid.uuid4().hex[:16]}"]
        try:
            t = server_now(db)
            db["u"].create_index("e", expireAfterSeconds=60)
            db["u"].insert_many([{"e": t + HOUR}, {"e": "x"}, {"e": None}, {}, {"e": [t + HOUR]}])
            db["p"].create_index("e", expireAfterSeconds=0, partialFilterExpression={"k": 1})
            db["p"].insert_many([{"e": t + HOUR, "k": 1}, {"e": "x", "k": 1}, {"k": 1}])
            db.create_collection(
                "c", clusteredIndex={"key": {"_id": 1}, "unique": True}, expireAfterSeconds=0
            )
            db["c"].insert_many([{"_id": t + HOUR}, {"_id": "x"}])
            # the server refuses the same count without the index: the report could not cheat
            with pytest.raises(OperationFailure) as refused:
                db["c"].count_documents({"_id": {"$lte": t}})
            assert refused.value.code == 291  # NoQueryExecutionPlans

            report = ttl_report(db, now=t + 2 * HOUR)

            found = [
                (i.collection, i.overdue, i.oldest_overdue and i.oldest_overdue.seconds_overdue, i.not_a_date,
                 i.null_or_missing, i.total)
                for i in report.indexes
            ]  # fmt: skip
            assert found == [("c", 1, 3600.0, 1, 0, 2), ("p", 1, 3600.0, 1, 1, 3), ("u", 2, 3540.0, 1, 2, 5)]
        finally:
            client.drop_database(db.name)


class AuthMongod(LocalMongod):
    """A server that requires authentication (``--auth``)."""

    def _command(self, port: int, dbpath: Path) -> list[str]:
        return [*super()._command(port, dbpath), "--auth"]


def test_an_unprivileged_user_gets_a_report_with_unknowns(tmp_path: Path) -> None:
    server = AuthMongod(ttl_monitor_sleep_secs=3600).start()
    try:
        with server.client() as client:  # the localhost exception lets the first user in
            client.admin.command("createUser", "root", pwd="root-secret", roles=["root"])
        with server.client(username="root", password="root-secret") as root:
            db = root["app"]
            db.command("createUser", "reader", pwd="reader-secret", roles=[{"role": "read", "db": "app"}])
            t = server_now(db)
            db["u"].create_index("e", expireAfterSeconds=0)
            db["u"].insert_many([{"_id": 1, "e": t - dt.timedelta(seconds=30)}, {"_id": 2, "e": None}])
        with server.client(username="reader", password="reader-secret", authSource="app") as reader:
            with pytest.raises(OperationFailure):  # what the report works around
                reader.admin.command("serverStatus")
            report = ttl_report(reader["app"], now=t)
        assert report.monitor == Monitor(None, None, None, None, None, True)
        assert report.notes == (
            "getParameter is not permitted (Unauthorized, code 13): its figures are unknown; the "
            "clusterMonitor role grants it",
            "serverStatus is not permitted (Unauthorized, code 13): its figures are unknown; the "
            "clusterMonitor role grants it",
        )
        oldest = Overdue(1, t - dt.timedelta(seconds=30), 30.0)
        assert [(i.overdue, i.oldest_overdue) for i in report.indexes] == [(1, oldest)]

        uri = f"mongodb://reader:reader-secret@127.0.0.1:{server.port}/?directConnection=true&authSource=app"
        result = invoke(uri, "app", tmp_path)
        assert result.exit_code == 0, result.output  # unknown is not an alert
        assert result.stdout.splitlines()[2:] == [
            "TTL monitor: state unknown, period unknown, passes unknown; this node is the primary",
            *(f"note: {note}" for note in report.notes),
        ]
        assert "reader-secret" not in result.output
    finally:
        with (
            server.client(username="root", password="root-secret") as root,
            contextlib.suppress(PyMongoError),
        ):
            root.admin.command("shutdown", force=True)  # the server closes the connection: expected
        server.stop()


# --- migrate.py ttl ------------------------------------------------------------------------------


def _backlog(db: Database[Any]) -> dt.datetime:
    """Two overdue records (30 s and 10 s), one string date, a null and a missing field."""
    t = server_now(db)
    files = db["user_files"]
    files.create_index("expires_at", expireAfterSeconds=0)
    files.insert_many([
        {"_id": "a", "expires_at": t - dt.timedelta(seconds=30)},
        {"_id": "b", "expires_at": t - dt.timedelta(seconds=10)},
        {"_id": "c", "expires_at": t + HOUR},
        {"_id": "iso", "expires_at": "2020-01-01T00:00:00"},
        {"_id": "never", "expires_at": None},
        {"_id": "missing"},
    ])  # fmt: skip
    return t - dt.timedelta(seconds=30)


def _now_line(line: str) -> dt.datetime:
    assert re.fullmatch(r"Now: [-0-9]{10} [:0-9]{8} UTC \(the server's clock\)", line), line
    return dt.datetime.strptime(line[5:24], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)


def test_the_text_report_and_max_overdue(
    quiet_mongod: LocalMongod, quiet_db: Database[Any], tmp_path: Path
) -> None:
    oldest = _backlog(quiet_db)
    for args, code in ((), 0), (("--max-overdue", "3600"), 0), (("--max-overdue", "10"), 4):
        result = invoke(quiet_mongod.uri, quiet_db.name, tmp_path, *args)
        assert result.exit_code == code, result.output
        lines = result.stdout.splitlines()
        # the oldest record's date has whole seconds, so the Now line's whole seconds give the figure
        late = int((_now_line(lines[0]) - oldest).total_seconds())
        assert 30 <= late < 120
        expected = [
            f"user_files.expires_at_1 (expires_at, 0 s): 2 overdue, oldest {late} s overdue (_id a); "
            "1 not a date (never deleted); 2 never expire (null or missing); ~6 records",
            "TTL monitor: enabled, every 3600 s, 0 passes, 0 deleted; this node is the primary",
        ]
        if code:
            expected.append(f"ALERT: user_files.expires_at_1: a record is {late} s overdue, more than "
                            "--max-overdue 10 s")  # fmt: skip
        assert lines[1:] == expected
        assert result.stderr.splitlines()[0] == f"Database {quiet_db.name} on {quiet_mongod.uri}"
    assert quiet_db["user_files"].count_documents({}) == 6  # the quiet monitor deleted nothing


def test_json(quiet_mongod: LocalMongod, quiet_db: Database[Any], tmp_path: Path) -> None:
    oldest = _backlog(quiet_db)
    result = invoke(quiet_mongod.uri, quiet_db.name, tmp_path, "--json", "--max-overdue", "5")
    assert result.exit_code == 4, result.output
    data = json.loads(result.stdout)  # one object, nothing else
    now = dt.datetime.fromisoformat(data["now"])
    late = (now - oldest).total_seconds()
    assert data == {
        "ok": False, "exit_code": 4, "command": "ttl", "database": quiet_db.name, "uri": quiet_mongod.uri,
        "now": data["now"], "now_source": "server",
        "monitor": {"enabled": True, "sleep_secs": 3600, "passes": 0, "deleted_documents": 0,
                    "sub_passes": None, "is_primary": True},
        "indexes": [{
            "collection": "user_files", "index": "expires_at_1", "field": "expires_at",
            "expire_after_seconds": 0, "clustered": False, "partial_filter": None, "overdue": 2,
            "oldest_overdue": {"id": "a", "value": oldest.isoformat(), "seconds_overdue": late},
            "not_a_date": 1, "null_or_missing": 2, "total": 6,
        }],
        "notes": [], "max_overdue": 5.0,
        "alerts": [f"user_files.expires_at_1: a record is {int(late)} s overdue, more than "
                   "--max-overdue 5 s"],
    }  # fmt: skip
    assert now.utcoffset() == dt.timedelta(0)
    assert 30 <= late < 120


def _keys(value: Any, at: str = "") -> set[str]:
    """Every key path of a JSON value (list items share their parent's path)."""
    if isinstance(value, dict):
        return {f"{at}.{k}" for k in value} | {p for k, v in value.items() for p in _keys(v, f"{at}.{k}")}
    if isinstance(value, list):
        return {p for item in value for p in _keys(item, at)}
    return set()


def test_the_documented_json_has_exactly_the_real_keys(
    quiet_mongod: LocalMongod, quiet_db: Database[Any], tmp_path: Path
) -> None:
    _backlog(quiet_db)
    page = (Path(__file__).parent.parent / "docs" / "ttl.md").read_text()
    (block,) = re.findall(r"```json\n(.*?)```", page, re.S)
    real = json.loads(invoke(quiet_mongod.uri, quiet_db.name, tmp_path, "--json").stdout)
    assert _keys(json.loads(block)) == _keys(real)


def test_a_disabled_monitor_exits_4(
    mongod: LocalMongod, mongo_client: MongoClient[dict[str, Any]], real_db: Database[Any], tmp_path: Path,
    monitor_off: None,
) -> None:  # fmt: skip
    passes, deleted = ttl_metrics(mongo_client)  # frozen while the monitor is off
    result = invoke(mongod.uri, real_db.name, tmp_path)
    assert result.exit_code == 4, result.output
    assert result.stdout.splitlines()[1:] == [
        f"No TTL index in database {real_db.name}.",
        f"TTL monitor: DISABLED, every 1 s, {passes} passes, {deleted} deleted; this node is the primary",
        "ALERT: the TTL monitor is disabled (ttlMonitorEnabled false): nothing expires",
    ]
    data = json.loads(invoke(mongod.uri, real_db.name, tmp_path, "--json").stdout)
    assert (data["ok"], data["exit_code"], data["monitor"]["enabled"], data["alerts"]) == (
        False, 4, False, ["the TTL monitor is disabled (ttlMonitorEnabled false): nothing expires"],
    )  # fmt: skip


def test_read_only_creates_nothing(
    mongod: LocalMongod, mongo_client: MongoClient[dict[str, Any]], real_db: Database[Any], tmp_path: Path
) -> None:
    result = invoke(mongod.uri, real_db.name, tmp_path, "--collection", "user_files")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1] == f"No TTL index in database {real_db.name}."
    assert re.fullmatch(
        r"TTL monitor: enabled, every 1 s, \d+ passes, \d+ deleted; this node is the primary", lines[2]
    )
    assert lines[3:] == ["note: collection user_files does not exist"]
    assert real_db.list_collection_names() == []
    assert real_db.name not in mongo_client.list_database_names()


def test_only_the_named_collections_in_the_cli(
    quiet_mongod: LocalMongod, quiet_db: Database[Any], tmp_path: Path
) -> None:
    _backlog(quiet_db)
    quiet_db["other"].create_index("e", expireAfterSeconds=0)
    result = invoke(quiet_mongod.uri, quiet_db.name, tmp_path, "--collection", "other", "--max-overdue", "0")
    assert result.exit_code == 0, result.output  # the overdue user_files were not asked about
    assert result.stdout.splitlines()[1] == (
        "other.e_1 (e, 0 s): 0 overdue; 0 not a date (never deleted); 0 never expire (null or missing); "
        "~0 records"
    )
