"""Shared test data and workers (importable by spawned processes)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pymongo import MongoClient

from userfiles_db import UserFiles


def file_data(user_id: int = 123456789012345678, n: int = 0, **overrides: Any) -> dict[str, Any]:
    """A record in the seed document's shape (created_at and expires_at left to the defaults)."""
    data: dict[str, Any] = {
        "file_id": f"{user_id}_{1700000000 + n}_{n:08x}",
        "user_id": user_id,
        "filename": f"data{n}.csv",
        "file_type": "csv",
        "file_path": f"/tmp/bot_code_interpreter/user_files/{user_id}/{user_id}_{n}.csv",
        "size": 1024 + n,
    }
    data.update(overrides)
    return data


def save_many_in_process(uri: str, db_name: str, user_id: int, ids: list[int], limit: int) -> list[str]:
    """Save files ``ids`` for one user from a separate process; return the evicted file_ids."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        store = UserFiles(client[db_name], max_files_per_user=limit, expiration_hours=48)
        evicted: list[str] = []
        for n in ids:
            for record in store.save_user_file(file_data(user_id, n)):
                evicted.append(record["file_id"])
        return evicted


def aware(value: dt.datetime) -> bool:
    return value.tzinfo is not None and value.utcoffset() == dt.timedelta(0)


@contextmanager
def local_zone(name: str) -> Iterator[str]:
    """The process's local zone set to ``name`` (``TZ`` + ``time.tzset``), restored afterwards:
    the bot writes naive strings in it."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = name
    time.tzset()
    try:
        yield name
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


def freeze(pid: int, timeout: float = 5.0) -> None:
    """SIGSTOP ``pid`` and wait until every one of its threads is stopped (state T in /proc):
    ``kill`` only queues the signal, and on a loaded machine a request sent right after it could
    still be served by a thread not yet stopped."""
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/stat") as stat:
                    states.append(stat.read().rsplit(")", 1)[1].split()[0])
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
        if states and all(state in ("T", "t") for state in states):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} not stopped after {timeout} s: thread states {states}")
        time.sleep(0.005)
