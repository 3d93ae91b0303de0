"""The benchmark itself: data generation, the measurements, the table."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import operator
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
from pymongo import AsyncMongoClient, MongoClient, monitoring
from pymongo.database import Database

from bench.peers import bench_peers
from bench.scale import bench_migrate_rss, bench_sweep, mb
from userfiles_db import AsyncUserFiles, UserFiles, load_schema
from userfiles_db.clock import UTC
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate import Runner, discover
from userfiles_db.migrate.config import bundled_migrations
from userfiles_db.migrate.steps import LEGACY_RECORDS, create_indexes, legacy_to_canonical
from userfiles_db.records import LegacyTime, live_filter

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"  # migrate-mongo's node_modules (git-ignored)
FILES_PER_USER = 10
NOW = dt.datetime.now(UTC).replace(microsecond=0)


@dataclass
class Row:
    metric: str
    ours: str
    baseline: str
    ratio: str
    goal: str
    met: str


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(
        self,
        metric: str,
        ours: str,
        baseline: str = "",
        ratio: str = "",
        goal: str = "",
        met: bool | None = None,
    ) -> None:
        self.rows.append(
            Row(metric, ours, baseline, ratio, goal, "" if met is None else ("yes" if met else "NO"))
        )
        verdict = "" if met is None else ("met" if met else "MISSED")
        print(f"  {metric}: {ours} | {baseline} | {ratio} | {goal} {verdict}", flush=True)

    def render(self) -> str:
        header = Row("metric", "userfiles_db", "baseline", "ratio", "goal", "met")
        rows = [header, *self.rows]
        widths = [
            max(len(getattr(r, f)) for r in rows)
            for f in ("metric", "ours", "baseline", "ratio", "goal", "met")
        ]

        def line(r: Row) -> str:
            cells = [r.metric, r.ours, r.baseline, r.ratio, r.goal, r.met]
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(r) for r in self.rows]
        return "\n".join(out + [""] + [f"- {n}" for n in self.notes])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------------------------------
# Data


def canonical_records(users: int, offset: int = 0) -> Iterator[dict[str, Any]]:
    """``users`` users with 10 files each; a quarter of the records already past expiry."""
    rng = random.Random(7 + offset)
    for u in range(users):
        user_id = 10**17 + offset + u
        for f in range(FILES_PER_USER):
            created = NOW - dt.timedelta(hours=rng.uniform(0, 47))
            expired = (u * FILES_PER_USER + f) % 4 == 0
            expires = (
                NOW - dt.timedelta(hours=rng.uniform(0.1, 40))
                if expired
                else NOW + dt.timedelta(hours=rng.uniform(1, 48))
            )
            file_id = f"{user_id}_{int(created.timestamp())}_{f:08x}"
            yield {
                "file_id": file_id,
                "user_id": user_id,
                "filename": f"data{f}.csv",
                "file_type": "csv",
                "file_path": f"/tmp/bot_code_interpreter/user_files/{user_id}/{file_id}.csv",
                "size": rng.randint(100, 10**7),
                "created_at": created,
                "expires_at": expires,
            }


def legacy_records(count: int) -> Iterator[dict[str, Any]]:
    """The bot's legacy shape: ISO strings, file_size, uploaded_at."""
    for i, record in enumerate(canonical_records(count // FILES_PER_USER, offset=5_000_000)):
        yield {
            "file_id": record["file_id"],
            "user_id": record["user_id"],
            "filename": record["filename"],
            "file_path": record["file_path"],
            "file_size": record["size"],
            "file_type": record["file_type"],
            "uploaded_at": record["created_at"].replace(tzinfo=None).isoformat(),
            "expires_at": None if i % 10 == 7 else record["expires_at"].replace(tzinfo=None).isoformat(),
        }


def insert(collection: Any, documents: Iterator[dict[str, Any]], batch: int = 10_000) -> int:
    count = 0
    chunk: list[dict[str, Any]] = []
    for document in documents:
        chunk.append(document)
        if len(chunk) == batch:
            collection.insert_many(chunk, ordered=False, bypass_document_validation=True)
            count += len(chunk)
            chunk = []
    if chunk:
        collection.insert_many(chunk, ordered=False, bypass_document_validation=True)
        count += len(chunk)
    return count


def make_user_files(db: Database[Any], name: str, users: int) -> None:
    collection = db[name]
    insert(collection, canonical_records(users))
    create_indexes(collection, load_schema())


def bot_indexes(collection: Any) -> None:
    collection.create_index([("user_id", 1), ("expires_at", -1)])
    collection.create_index("file_id", unique=True)
    collection.create_index("expires_at")


# ---------------------------------------------------------------------------------------------
# Measurements


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def interleaved(
    calls: dict[str, Callable[[int], Any]], users: int, iterations: int, seed: int
) -> dict[str, list[float]]:
    """Time each call on the same random users, rotating which goes first, so noise hits all."""
    rng = random.Random(seed)
    named = list(calls.items())
    times: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(iterations):
        user = 10**17 + rng.randrange(users)
        turn = i % len(named)
        for name, call in named[turn:] + named[:turn]:
            started = time.perf_counter()
            call(user)
            times[name].append(time.perf_counter() - started)
    return times


def raw_get(collection: Any, legacy: LegacyTime) -> Callable[[int], Any]:
    """Raw find with the store's filter, built from "now" inside the timed call as a caller must."""
    return lambda user: list(collection.find({"user_id": user, **live_filter(dt.datetime.now(UTC), legacy)}))


_NEWEST_FIRST = operator.itemgetter("created_at", "file_id")


def raw_same(collection: Any, legacy: LegacyTime) -> Callable[[int], Any]:
    """Raw find returning what the store returns: ``collection`` is tz_aware (aware UTC datetimes,
    decoded in C), the records newest first (sorted here: cheaper than a server-side sort). It
    keeps ``_id``, which the store drops: the strictest cheap baseline."""
    return lambda user: sorted(
        collection.find({"user_id": user, **live_filter(dt.datetime.now(UTC), legacy)}),
        key=_NEWEST_FIRST,
        reverse=True,
    )


def bounded(call: Callable[[int], Any], seconds: float) -> Callable[[int], Any]:
    """``call`` within PyMongo's client-side timeout, the time bound the store puts on every call."""

    def run(user: int) -> Any:
        with pymongo.timeout(seconds):
            return call(user)

    return run


def add_ratio(
    table: Table, metric: str, ours: list[float], theirs: list[float], goal: str = ">= 0.95"
) -> None:
    ratio = sum(theirs) / sum(ours)
    table.add(metric, f"{len(ours) / sum(ours):,.0f}/s", f"{len(theirs) / sum(theirs):,.0f}/s",
              f"{ratio:.3f}", goal, ratio >= 0.95 if goal == ">= 0.95" else None)  # fmt: skip


def bench_get(table: Table, db: Database[Any], users: int, iterations: int) -> None:
    """The store on the default client against raw find returning the same aware records in the
    same order (the goal), against raw find with the same filter returning naive datetimes (what
    raw PyMongo gives by default), and both on a tz_aware client."""
    legacy = LegacyTime.named("UTC")
    aware = db.get_collection("user_files", codec_options=db.codec_options.with_options(tz_aware=True))
    store = UserFiles(db, max_files_per_user=100)
    user = 10**17 + 1
    same = raw_same(aware, legacy)(user)
    for record in same:
        record.pop("_id")
    if store.get_user_files(user) != same:
        raise AssertionError("get_user_files and the raw baseline return different records")
    times = interleaved(
        {
            "ours": store.get_user_files,
            "same": raw_same(aware, legacy),
            "raw": raw_get(db["user_files"], legacy),
            "bounded": bounded(raw_same(aware, legacy), store.timeout_seconds),
        },
        users, iterations, seed=1,
    )  # fmt: skip
    metric = f"get_user_files, {users * FILES_PER_USER:,} records: vs raw find returning the same results"
    add_ratio(table, metric, times["ours"], times["same"])
    add_ratio(table, "  the same, vs raw find with the same filter (naive datetimes, unsorted)",
              times["ours"], times["raw"], goal="reported")  # fmt: skip
    add_ratio(table, "  the same, vs raw returning the same results within the same pymongo.timeout()",
              times["ours"], times["bounded"], goal="reported")  # fmt: skip
    aware_db = db.client.get_database(db.name, codec_options=aware.codec_options)
    both = interleaved(
        {"ours": UserFiles(aware_db, max_files_per_user=100).get_user_files, "same": raw_same(aware, legacy)},
        users, iterations, seed=2,
    )  # fmt: skip
    add_ratio(
        table,
        "  both on a tz_aware=True client: store vs raw find (same results)",
        both["ours"],
        both["same"],
    )
    ours, theirs = times["ours"], times["same"]
    table.add(
        "get_user_files p50 / p99 (vs raw find, same results); ratio of the p50s",
        f"{ms(pct(ours, 0.5))} / {ms(pct(ours, 0.99))}",
        f"{ms(pct(theirs, 0.5))} / {ms(pct(theirs, 0.99))}",
        f"{pct(theirs, 0.5) / pct(ours, 0.5):.3f}",
        "reported",
    )


def bench_get_adopted(table: Table, db: Database[Any], users: int, iterations: int) -> None:
    """After the adoption (legacy_timezone=None): no string branch in the query."""
    store = UserFiles(db, max_files_per_user=100, legacy_timezone=None)
    aware = db.get_collection("user_files", codec_options=db.codec_options.with_options(tz_aware=True))
    times = interleaved(
        {"ours": store.get_user_files, "same": raw_same(aware, LegacyTime.named(None))},
        users, iterations, seed=6,
    )  # fmt: skip
    add_ratio(table, "get_user_files with legacy_timezone=None (after adoption) vs raw (same results)",
              times["ours"], times["same"])  # fmt: skip


def bench_get_async(table: Table, uri: str, db_name: str, users: int, rounds: int) -> None:
    async def run() -> tuple[list[float], list[float], float, float]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, maxPoolSize=100)
        db = client[db_name]
        store = AsyncUserFiles(db, max_files_per_user=100)
        legacy = LegacyTime.named("UTC")
        rng = random.Random(2)
        lat_ours: list[float] = []
        lat_raw: list[float] = []
        wall = {"ours": 0.0, "raw": 0.0}

        async def one_ours(user: int) -> None:
            start = time.perf_counter()
            await store.get_user_files(user)
            lat_ours.append(time.perf_counter() - start)

        aware = db.get_collection("user_files", codec_options=db.codec_options.with_options(tz_aware=True))

        async def raw_same(user: int) -> list[dict[str, Any]]:
            found = await aware.find({"user_id": user, **live_filter(dt.datetime.now(UTC), legacy)}).to_list(
                None
            )
            return sorted(found, key=_NEWEST_FIRST, reverse=True)

        async def one_raw(user: int) -> None:
            start = time.perf_counter()
            await raw_same(user)
            lat_raw.append(time.perf_counter() - start)

        same = await raw_same(10**17 + 1)
        for record in same:
            record.pop("_id")
        if await store.get_user_files(10**17 + 1) != same:
            raise AssertionError(
                "AsyncUserFiles.get_user_files and the raw baseline return different records"
            )

        await asyncio.gather(*(one_raw(10**17 + u) for u in range(100)))  # warm the pool
        lat_raw.clear()
        for r in range(rounds):
            batch = [10**17 + rng.randrange(users) for _ in range(100)]
            order = [("ours", one_ours), ("raw", one_raw)]
            if r % 2:
                order.reverse()
            for name, fn in order:
                start = time.perf_counter()
                await asyncio.gather(*(fn(u) for u in batch))
                wall[name] += time.perf_counter() - start
        await client.close()
        return lat_ours, lat_raw, wall["ours"], wall["raw"]

    ours, raw, wall_ours, wall_raw = asyncio.run(run())
    ratio = wall_raw / wall_ours
    table.add(
        "AsyncUserFiles.get_user_files, 100 concurrent: vs raw AsyncMongoClient (same results)",
        f"{len(ours) / wall_ours:,.0f}/s",
        f"{len(raw) / wall_raw:,.0f}/s",
        f"{ratio:.3f}",
        ">= 0.95",
        ratio >= 0.95,
    )
    table.add(
        "async p50 / p99 (per request, 100 in flight)",
        f"{ms(pct(ours, 0.5))} / {ms(pct(ours, 0.99))}",
        f"{ms(pct(raw, 0.5))} / {ms(pct(raw, 0.99))}",
    )


def bench_growth(table: Table, db: Database[Any], users: int, iterations: int) -> None:
    big = UserFiles(db, max_files_per_user=100)
    small = UserFiles(db, collection="user_files_small", max_files_per_user=100)
    rng = random.Random(3)
    t_big: list[float] = []
    t_small: list[float] = []
    for _ in range(iterations):
        t_big.append(timed(lambda: big.get_user_files(10**17 + rng.randrange(users))))
        t_small.append(timed(lambda: small.get_user_files(10**17 + rng.randrange(1000))))
    ratio = statistics.median(t_big) / statistics.median(t_small)
    table.add(
        f"get_user_files p50 at {users * FILES_PER_USER:,} vs 10,000 records",
        ms(statistics.median(t_big)),
        ms(statistics.median(t_small)),
        f"{ratio:.3f}",
        "<= 1.2",
        ratio <= 1.2,
    )


class Counter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name not in ("hello", "isMaster", "ping", "endSessions"):
            self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def bench_round_trips(table: Table, uri: str, db_name: str) -> None:
    counter = Counter()
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri, event_listeners=[counter]) as client:
        db: Database[Any] = client[db_name]
        store = UserFiles(db, collection="user_files_small", max_files_per_user=10)
        user = 10**17 + 999_999

        def count(call: Callable[[], Any]) -> int:
            counter.names.clear()
            call()
            return len(counter.names)

        base = {
            "user_id": user,
            "filename": "x.csv",
            "file_type": "csv",
            "file_path": "/tmp/x.csv",
            "size": 1,
        }
        for n in range(9):
            store.save_user_file({**base, "file_id": f"rt{n}"})
        figures = [
            ("get_user_files", count(lambda: store.get_user_files(user)), 1),
            (
                "save_user_file, no eviction",
                count(lambda: store.save_user_file({**base, "file_id": "rt9"})),
                2,
            ),
            (
                "save_user_file, one eviction",
                count(lambda: store.save_user_file({**base, "file_id": "rt10"})),
                3,
            ),
            ("delete_user_file", count(lambda: store.delete_user_file("rt10")), 1),
        ]
    for name, trips, goal in figures:
        table.add(
            f"round trips: {name}", str(trips), "", "", f"{'<= ' if goal > 1 else ''}{goal}", trips <= goal
        )


def copy_collection(db: Database[Any], source: str, target: str, limit: int | None = None) -> None:
    pipeline: list[dict[str, Any]] = [{"$limit": limit}] if limit else []
    db[source].aggregate([*pipeline, {"$out": target}])
    bot_indexes(db[target])


def bench_adoption(table: Table, db: Database[Any], count: int, tmp: Path) -> None:
    started = time.perf_counter()
    insert(db["legacy_src"], legacy_records(count))
    print(f"  (generated {count:,} legacy records in {time.perf_counter() - started:.1f} s)", flush=True)
    for name in ("adopt_engine", "adopt_raw"):
        copy_collection(db, "legacy_src", name)
    # The real migration file, through the engine (lock, changelog, batches), on its own database.
    engine_db = db.client[f"{db.name}_engine"]
    db["adopt_engine"].aggregate([{"$out": {"db": engine_db.name, "coll": "user_files"}}])
    bot_indexes(engine_db["user_files"])
    folder = tmp / "adopt_only"
    folder.mkdir()
    shutil.copy(bundled_migrations() / "0002_adopt_legacy_records.py", folder)
    engine = timed(lambda: Runner(engine_db, discover(folder)).up())
    raw = timed(lambda: db["adopt_raw"].update_many(LEGACY_RECORDS, legacy_to_canonical("UTC")))
    left = engine_db["user_files"].count_documents({"uploaded_at": {"$exists": True}}, hint="_id_")
    ratio = engine / raw
    table.add(
        f"adoption migration, {count:,} legacy records: time vs one raw update_many",
        f"{engine:.2f} s",
        f"{raw:.2f} s",
        f"{ratio:.2f}x",
        "<= 1.2x",
        ratio <= 1.2 and left == 0,
    )

    sample = min(20_000, count)
    copy_collection(db, "legacy_src", "adopt_loop", limit=sample)
    loop_db = db["adopt_loop"]
    tz = LegacyTime.named("UTC")

    def client_loop() -> None:
        for doc in loop_db.find({"uploaded_at": {"$exists": True}}):
            loop_db.update_one(
                {"_id": doc["_id"]},
                {
                    "$set": {
                        "created_at": tz.parse(doc["uploaded_at"]),
                        "size": doc["file_size"],
                        "expires_at": tz.parse(doc["expires_at"]) if doc["expires_at"] else None,
                    },
                    "$unset": {"uploaded_at": "", "file_size": ""},
                },
            )

    loop = timed(client_loop) * count / sample
    table.add(
        f"adoption: client-side read/rewrite loop (sampled on {sample:,}, scaled)",
        f"{engine:.2f} s",
        f"{loop:.2f} s",
        f"{loop / engine:.1f}x slower",
        "reported",
    )
    db.client.drop_database(engine_db.name)
    for name in ("legacy_src", "adopt_raw", "adopt_loop", "adopt_engine"):
        db.drop_collection(name)


def bench_delete_expired(table: Table, db: Database[Any], expired: int, users: int) -> None:
    rng = random.Random(4)

    def build(name: str, count: int) -> None:
        db.drop_collection(name)
        docs = (
            {
                "file_id": f"x{name}{i}",
                "user_id": 10**17 + i % 1000,
                "filename": "f",
                "file_type": "csv",
                "file_path": "/tmp/f",
                "size": 1,
                "created_at": NOW - dt.timedelta(days=3),
                "expires_at": NOW - dt.timedelta(seconds=rng.randint(1, 86_400)),
            }
            for i in range(count)
        )
        insert(db[name], docs)
        create_indexes(db[name], load_schema())

    reader = UserFiles(db, max_files_per_user=100)
    baseline = [timed(lambda: reader.get_user_files(10**17 + rng.randrange(users))) for _ in range(300)]

    def under_reads(delete: Callable[[], Any]) -> tuple[float, list[float]]:
        """Time ``delete`` while a reader runs get_user_files (both deletes get the same load)."""
        latencies: list[float] = []
        stop = threading.Event()

        def read() -> None:
            r = random.Random(5)
            while not stop.is_set():
                latencies.append(timed(lambda: reader.get_user_files(10**17 + r.randrange(users))))

        thread = threading.Thread(target=read)
        thread.start()
        took = timed(delete)
        stop.set()
        thread.join()
        return took, latencies

    # Two rounds of half the records each, in alternating order, so neither side always goes first.
    half = expired // 2
    ours = raw = 0.0
    latencies: list[float] = []
    for round_ in range(2):
        build("expired_ours", half)
        build("expired_raw", half)
        store = UserFiles(db, collection="expired_ours")
        sides = [
            ("ours", store.delete_expired_files),
            ("raw", lambda: db["expired_raw"].delete_many({"expires_at": {"$lte": dt.datetime.now(UTC)}})),
        ]
        for name, delete in sides if round_ == 0 else sides[::-1]:
            took, seen = under_reads(delete)
            if name == "ours":
                ours += took
                latencies += seen
            else:
                raw += took
    ratio = raw / ours
    table.add(
        f"delete_expired_files, {2 * half:,} expired: throughput vs raw delete_many (same reads)",
        f"{2 * half / ours:,.0f}/s",
        f"{2 * half / raw:,.0f}/s",
        f"{ratio:.3f}",
        ">= 0.9",
        ratio >= 0.9,
    )
    table.add(
        "get_user_files p99 while delete_expired_files runs (vs idle)",
        ms(pct(latencies, 0.99)) if latencies else "n/a",
        ms(pct(baseline, 0.99)),
        "",
        "reported",
    )
    db.drop_collection("expired_ours")
    db.drop_collection("expired_raw")


def wall(command: list[str], env: dict[str, str], cwd: Path, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


MIGRATE_MONGO_MIGRATION = """module.exports = {
  async up(db) { await db.collection('user_files').createIndex(%s, %s); },
  async down(db) { }
};
"""


def bench_cli(table: Table, uri: str, tmp: Path, skip_node: bool) -> None:
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": "cli_ours"}
    migrate = [sys.executable, str(ROOT / "migrate.py")]
    subprocess.run([*migrate, "up"], env=env, cwd=tmp, check=True, capture_output=True)
    ours_up = wall([*migrate, "up"], env, tmp)
    ours_status = wall([*migrate, "status"], env, tmp)
    node = shutil.which("node")
    theirs: tuple[float, float] | None = None
    reason = ""
    if skip_node:
        reason = "skipped (--skip-node)"
    elif node is None:
        reason = "no node on PATH"
    else:
        try:
            theirs = migrate_mongo_times(uri, tmp, env)
        except (subprocess.CalledProcessError, OSError) as exc:
            stderr = getattr(exc, "stderr", b"") or b""
            reason = f"migrate-mongo could not run: {exc} {stderr.decode(errors='replace')[-300:]}"
    for name, ours, index in (("up, nothing pending", ours_up, 0), ("status", ours_status, 1)):
        if theirs is None:
            table.add(f"migrate.py {name}: wall time vs migrate-mongo", f"{ours:.3f} s", reason, "", "faster")
        else:
            table.add(
                f"migrate.py {name}: wall time vs migrate-mongo",
                f"{ours:.3f} s",
                f"{theirs[index]:.3f} s",
                f"{ours / theirs[index]:.2f}x",
                "faster",
                ours < theirs[index],
            )


def migrate_mongo_times(uri: str, tmp: Path, env: dict[str, str]) -> tuple[float, float]:
    install = CACHE / "node"
    binary = install / "node_modules" / ".bin" / "migrate-mongo"
    if not binary.exists():
        install.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(install), "migrate-mongo@14"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    project = tmp / "migrate-mongo"
    (project / "migrations").mkdir(parents=True)
    (project / "migrate-mongo-config.js").write_text(
        f"module.exports = {{mongodb: {{url: {json.dumps(uri)}, databaseName: 'cli_theirs', options: {{}}}},"
        " migrationsDir: 'migrations', changelogCollectionName: 'changelog',"
        " lockCollectionName: 'changelog_lock', lockTtl: 60, migrationFileExtension: '.js',"
        " useFileHash: false, moduleSystem: 'commonjs'};\n"
    )
    specs = [
        ("{file_id: 1}", "{unique: true, name: 'file_id_1'}"),
        ("{user_id: 1, expires_at: -1}", "{name: 'user_id_1_expires_at_-1'}"),
        ("{expires_at: 1}", "{name: 'expires_at_1', expireAfterSeconds: 0}"),
        ("{created_at: 1}", "{name: 'created_at_1'}"),
    ]
    for n, (keys, options) in enumerate(specs, 1):
        (project / "migrations" / f"2026010100000{n}-step{n}.js").write_text(
            MIGRATE_MONGO_MIGRATION % (keys, options)
        )
    command = [str(binary)]
    subprocess.run([*command, "up"], env=env, cwd=project, check=True, capture_output=True)
    return wall([*command, "up"], env, project), wall([*command, "status"], env, project)


def import_time(code: str) -> float:
    """Median cumulative import time (s) of the first module ``code`` imports, in a fresh interpreter."""
    module = code.split()[-1]
    values = []
    for _ in range(5):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*(\S+)$", line)
            if match and match[2] == module:
                values.append(int(match[1]) / 1e6)
    return statistics.median(values)


@contextmanager
def server(cache_gb: float) -> Iterator[LocalMongod]:
    with LocalMongod(
        cache_size_gb=cache_gb, ttl_monitor_sleep_secs=None, set_parameters={"ttlMonitorEnabled": "false"}
    ) as mongod:
        yield mongod


def machine() -> str:
    memory = ""
    try:
        with open("/proc/meminfo") as f:
            memory = f"{int(f.readline().split()[1]) / 2**20:.0f} GiB"
    except OSError:
        pass
    system = f"{platform.system()} {platform.machine()}"
    return f"{os.cpu_count()} cores, {memory}, {system}, Python {platform.python_version()}"


def main(records: int, *, skip_node: bool, cache_gb: float) -> int:
    users = records // FILES_PER_USER
    quick = records < 1_000_000
    table = Table()
    client: MongoClient[dict[str, Any]]
    with server(cache_gb) as mongod, MongoClient(mongod.uri) as client, tempfile.TemporaryDirectory() as tmp:
        version = client.server_info()["version"]
        print(
            f"MongoDB {version} on {machine()}; {records:,} records ({users:,} users x {FILES_PER_USER})",
            flush=True,
        )
        db: Database[Any] = client["bench"]
        started = time.perf_counter()
        make_user_files(db, "user_files", users)
        make_user_files(db, "user_files_small", 1000)
        print(f"  (generated in {time.perf_counter() - started:.1f} s)", flush=True)
        bench_get(table, db, users, 2000 if quick else 5000)
        bench_get_adopted(table, db, users, 2000 if quick else 5000)
        bench_get_async(table, mongod.uri, "bench", users, 60 if quick else 100)
        bench_growth(table, db, users, 1000 if quick else 3000)
        bench_round_trips(table, mongod.uri, "bench")
        bench_adoption(table, db, records, Path(tmp))
        bench_delete_expired(table, db, records // 4, users)
        bench_cli(table, mongod.uri, Path(tmp), skip_node)
        bench_peers(table, mongod.uri, "bench", users, 4000 if quick else 8000)
        bench_sweep(table, client, mongod.uri, [records] if quick else [100_000, records], Path(tmp))
        bench_migrate_rss(table, client, mongod.uri, records, Path(tmp))
        lib = import_time("import userfiles_db")
        cli = import_time("import userfiles_db.cli")
        table.add("import time: userfiles_db", f"{lib * 1000:.0f} ms")
        table.add("import time: migrate.py (userfiles_db.cli)", f"{cli * 1000:.0f} ms")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        table.add("peak RSS of the benchmark process itself (data generated in batches)", mb(peak))
        table.notes.append(
            f"MongoDB {version}, {machine()}, WiredTiger cache {cache_gb} GB, TTL monitor disabled"
        )
    print()
    print(table.render())
    return 0
