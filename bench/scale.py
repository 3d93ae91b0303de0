"""The sweep at scale and peak memory: each measured in a child process of its own (``os.wait4``
gives that child's peak RSS), beside a floor child that imports and connects but does no work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

ROOT = Path(__file__).resolve().parent.parent
RECORDS_ROOT = "/tmp/bot_code_interpreter/user_files"  # where bench.run's records point

SWEEP_CHILD = """
import json, sys, time
from pymongo import MongoClient
from userfiles_db.disk import sweep
uri, db, root, records_root, work = sys.argv[1:6]
with MongoClient(uri) as client:
    database = client[db]
    database.list_collection_names()
    report = None
    started = time.perf_counter()
    if work == "1":
        report = sweep(database, root, records_root=records_root, grace_seconds=0, max_remove="100%")
    took = time.perf_counter() - started
print(json.dumps({"seconds": took, "files": report.files_seen if report else 0,
                  "removed": len(report.removed_files) if report else 0,
                  "live": report.live_records if report else 0}))
"""


# Linux hands a child the parent's RSS high-water mark across fork and exec, so the benchmark
# (100+ MB) cannot read a child's peak itself: a small interpreter in between starts the command
# and reports the command's own ru_maxrss from os.wait4.
_WRAPPER = (
    "import os, subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(child.pid, 0)\n"
    "child.returncode = 0\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def peak_of(
    command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, int, str]:
    """Wall time, peak RSS in bytes (the command's own) and stdout of ``command``."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "maxrss"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", _WRAPPER, str(report), *command], env=env, cwd=cwd, capture_output=True
        )
        took = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(
                f"{command[:3]} exited {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}"
            )
        return took, int(report.read_text()) * 1024, done.stdout.decode()


def mb(value: int) -> str:
    return f"{value / 2**20:.0f} MB"


def mb_above(value: int) -> str:
    """A difference of peaks: below 1 MB either way is no growth."""
    return f"{value / 2**20:+.0f} MB" if abs(value) >= 2**20 else "+0 MB"


def make_files(client: MongoClient[dict[str, Any]], db_name: str, root: Path) -> int:
    """An empty file for every record of ``db_name.user_files``, where its path maps under ``root``."""
    count = 0
    made: set[str] = set()
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL
    for record in client[db_name]["user_files"].find({}, {"_id": 0, "file_path": 1}):
        local = str(root) + record["file_path"][len(RECORDS_ROOT) :]
        parent = local.rsplit("/", 1)[0]
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        os.close(os.open(local, flags, 0o644))
        count += 1
    return count


def copy_users(client: MongoClient[dict[str, Any]], source: str, target: str, records: int) -> None:
    """``target``.user_files: the first ``records`` / 10 users of ``source``.user_files, indexed."""
    from bench.run import FILES_PER_USER, bot_indexes

    client.drop_database(target)
    users = records // FILES_PER_USER
    client[source]["user_files"].aggregate(
        [{"$match": {"user_id": {"$lt": 10**17 + users}}}, {"$out": {"db": target, "coll": "user_files"}}]
    )
    bot_indexes(client[target]["user_files"])


def bench_sweep(
    table: Any, client: MongoClient[dict[str, Any]], uri: str, sizes: list[int], tmp: Path
) -> None:
    """files/s and peak RSS of the sweep at each size (files = records; a quarter of the records
    expired, so a quarter of the files are orphans it removes), and the growth between sizes."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    floor = None
    figures: list[tuple[int, float, int]] = []
    for size in sizes:
        name = f"sweep_{size}"
        copy_users(client, "bench", name, size)
        root = tmp / f"files_{size}"
        started = time.perf_counter()
        files = make_files(client, name, root)
        print(f"  (made {files:,} files in {time.perf_counter() - started:.1f} s)", flush=True)
        base = [sys.executable, "-c", SWEEP_CHILD, uri, name, str(root), RECORDS_ROOT]
        if floor is None:
            floor = peak_of([*base, "0"], env)[1]
        _, peak, out = peak_of([*base, "1"], env)
        result = json.loads(out)
        seconds = result["seconds"]
        if result["files"] != files or result["removed"] != files - result["live"]:
            raise AssertionError(f"sweep at {size:,}: unexpected report {result}")
        table.add(
            f"sweep, {files:,} files + records ({result['removed']:,} orphans removed): files/s, peak RSS",
            f"{files / seconds:,.0f}/s, {seconds:.1f} s, {mb(peak)}",
            f"floor {mb(floor)}",
            mb_above(peak - floor),
            "reported",
        )
        figures.append((files, seconds, peak - floor))
        shutil.rmtree(root)
        client.drop_database(name)
    if len(figures) > 1:
        (n0, t0, m0), (n1, t1, m1) = figures[0], figures[-1]
        table.add(
            f"sweep growth, {n0:,} -> {n1:,} files ({n1 / n0:.0f}x): time, RSS above floor",
            f"{t1 / t0:.1f}x time, {m1 / max(m0, 1):.1f}x RSS",
            f"{t0:.1f} s -> {t1:.1f} s; {mb(m0)} -> {mb(m1)}",
            "",
            "time ~linear",
            t1 / t0 <= 1.5 * n1 / n0,
        )


def bench_migrate_rss(
    table: Any, client: MongoClient[dict[str, Any]], uri: str, count: int, tmp: Path
) -> None:
    """Peak RSS of ``migrate.py up`` adopting ``count`` legacy records (every bundled migration),
    against ``migrate.py status`` on the same database as the floor."""
    from bench.run import bot_indexes, insert, legacy_records

    name = "rss_adopt"
    client.drop_database(name)
    insert(client[name]["user_files"], legacy_records(count))
    bot_indexes(client[name]["user_files"])
    env = {**os.environ, "MONGODB_URI": uri, "MONGODB_DB": name}
    migrate = [sys.executable, str(ROOT / "migrate.py")]
    work = tmp / "rss"
    work.mkdir(exist_ok=True)
    _, floor, _ = peak_of([*migrate, "status"], env, work)
    took, peak, _ = peak_of([*migrate, "up"], env, work)
    left = client[name]["user_files"].count_documents({"uploaded_at": {"$exists": True}}, hint="_id_")
    table.add(
        f"migrate.py up adopting {count:,} legacy records: peak RSS (time)",
        f"{mb(peak)} ({took:.1f} s)",
        f"status: {mb(floor)}",
        mb_above(peak - floor),
        "bounded",
        left == 0 and peak - floor < 200 * 2**20,
    )
    client.drop_database(name)
