"""Issue 9 item 1: concurrent saves that together exceed the limit. Bounded storms on the real
server: the user keeps exactly the newest ``min(limit, n)`` records by the one total order
(creation time, then file_id), and every other record is reported evicted exactly once."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.conftest import EventLoopThread
from tests.helpers import file_data
from userfiles_db import AsyncUserFiles, UserFiles
from userfiles_db.local_server import LocalMongod
from userfiles_db.records import order_key

USER = 123456789012345678


def check_outcome(
    db: Database[Any], user_id: int, saved: list[str], evicted: list[dict[str, Any]], limit: int
) -> None:
    kept = [UserFiles(db).get_user_files(user_id)]
    remaining = kept[0]
    ids = [r["file_id"] for r in evicted]
    assert len(ids) == len(set(ids)), "a record was reported evicted twice"
    assert {r["file_id"] for r in remaining} | set(ids) == set(saved), "a record vanished unreported"
    assert not {r["file_id"] for r in remaining} & set(ids)
    everything = sorted([*remaining, *evicted], key=order_key, reverse=True)
    newest = [r["file_id"] for r in everything[: min(limit, len(saved))]]
    assert [r["file_id"] for r in remaining] == newest, "the user did not keep the newest records"


def thread_round(db: Database[Any], user_id: int, limit: int, savers: int) -> None:
    store = UserFiles(db, max_files_per_user=limit)
    start = threading.Barrier(savers)
    evicted: list[dict[str, Any]] = []
    lock = threading.Lock()

    def save(n: int) -> None:
        start.wait()
        gone = store.save_user_file(file_data(user_id, n))
        with lock:
            evicted.extend(gone)

    with ThreadPoolExecutor(savers) as pool:
        list(pool.map(save, range(savers)))
    check_outcome(db, user_id, [file_data(user_id, n)["file_id"] for n in range(savers)], evicted, limit)


def test_limit_1_two_concurrent_saves_keep_the_newest(real_user_files_db: Database[Any]) -> None:
    # The landed code ended with 0 records in 38 of 40 such rounds.
    for round_ in range(40):
        thread_round(real_user_files_db, USER + round_, limit=1, savers=2)


def test_limit_20_twenty_five_concurrent_saves_keep_twenty(real_user_files_db: Database[Any]) -> None:
    # The landed code kept 19.
    for round_ in range(4):
        thread_round(real_user_files_db, USER + round_, limit=20, savers=25)
        assert len(UserFiles(real_user_files_db).get_user_files(USER + round_)) == 20


def test_storm_with_existing_records_and_repeated_saves(real_user_files_db: Database[Any]) -> None:
    # Several savers each saving a run of files while others do the same: after every round the
    # newest `limit` remain, whatever the interleaving.
    limit, savers, per_saver = 3, 6, 8
    store = UserFiles(real_user_files_db, max_files_per_user=limit)
    evicted: list[dict[str, Any]] = []
    lock = threading.Lock()
    start = threading.Barrier(savers)

    def run(worker: int) -> None:
        start.wait()
        for i in range(per_saver):
            gone = store.save_user_file(file_data(USER, worker * 100 + i))
            with lock:
                evicted.extend(gone)

    with ThreadPoolExecutor(savers) as pool:
        list(pool.map(run, range(savers)))
    saved = [file_data(USER, w * 100 + i)["file_id"] for w in range(savers) for i in range(per_saver)]
    check_outcome(real_user_files_db, USER, saved, evicted, limit)


@pytest.mark.parametrize("driver", ["async", "motor"])
def test_async_concurrent_over_limit_saves_keep_the_newest(
    driver: str,
    real_user_files_db: Database[Any],
    async_client: Any,
    motor_client: Any,
    event_loop_thread: EventLoopThread,
) -> None:
    client = async_client if driver == "async" else motor_client
    db_name = real_user_files_db.name

    async def storm(user_id: int, limit: int, savers: int) -> list[dict[str, Any]]:
        store = AsyncUserFiles(client[db_name], max_files_per_user=limit)
        results = await asyncio.gather(*(store.save_user_file(file_data(user_id, n)) for n in range(savers)))
        return [record for result in results for record in result]

    for round_, (limit, savers) in enumerate([(1, 2)] * 10 + [(20, 25), (5, 30)]):
        evicted = event_loop_thread.run(storm(USER + round_, limit, savers))
        saved = [file_data(USER + round_, n)["file_id"] for n in range(savers)]
        check_outcome(real_user_files_db, USER + round_, saved, evicted, limit)


def save_in_process(uri: str, db_name: str, user_id: int, ids: list[int], limit: int) -> list[dict[str, Any]]:
    """Save files ``ids`` from a separate process (its own client); return the evicted records."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        store = UserFiles(client[db_name], max_files_per_user=limit)
        return [record for n in ids for record in store.save_user_file(file_data(user_id, n))]


def test_process_storm_keeps_the_newest(real_user_files_db: Database[Any], mongod: LocalMongod) -> None:
    limit, workers, per_worker = 3, 4, 8
    jobs = [list(range(w * 100, w * 100 + per_worker)) for w in range(workers)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(
            pool.map(
                save_in_process,
                [mongod.uri] * workers,
                [real_user_files_db.name] * workers,
                [USER] * workers,
                jobs,
                [limit] * workers,
            )
        )
    evicted = [record for result in results for record in result]
    saved = [file_data(USER, n)["file_id"] for job in jobs for n in job]
    check_outcome(real_user_files_db, USER, saved, evicted, limit)
