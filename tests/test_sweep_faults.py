"""The sweep on hostile trees and odd records: it never crashes, and only "does not exist" is
missing (issue 9 item 5). On the real server."""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database

from userfiles_db.cli import tools
from userfiles_db.clock import UTC
from userfiles_db.disk import sweep
from userfiles_db.local_server import LocalMongod

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2
CAPABILITY_VERSION_3 = 0x20080522


def later() -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(hours=2)


def raw_record(user_id: int, n: int, path: str, *, live: bool = True) -> dict[str, Any]:
    """A record in the canonical shape, written straight to the collection (the store may refuse
    odd paths; the sweep must survive whatever is stored)."""
    now = dt.datetime.now(UTC)
    return {
        "file_id": f"{user_id}_{1700000000 + n}_{n:08x}",
        "user_id": user_id,
        "filename": f"f{n}.csv",
        "file_type": "csv",
        "file_path": path,
        "size": 4,
        "created_at": now,
        "expires_at": now + dt.timedelta(hours=48 if live else -1),
    }


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


@contextmanager
def permissions_apply() -> Iterator[None]:
    """File permissions apply to this thread: as root, the capabilities that bypass them are
    dropped from its effective set (and restored after); otherwise nothing to do."""
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    header = _CapHeader(CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip("capget failed: cannot make permissions apply to root here")
    saved = data[0].effective
    data[0].effective &= ~((1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip("capset failed: cannot make permissions apply to root here")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """A root with a readable user directory and an unreadable one holding a live file."""
    root = tmp_path / "user_files"
    (root / "1").mkdir(parents=True)
    (root / "2").mkdir()
    (root / "1" / "orphan.csv").write_text("data")
    (root / "2" / "live.csv").write_text("data")
    (root / "2" / "orphan.csv").write_text("data")
    (root / "2").chmod(0)
    with permissions_apply():
        try:
            os.listdir(root / "2")
        except PermissionError:
            pass
        else:
            pytest.skip("permissions do not apply here")
    try:
        yield {"root": root, "locked": root / "2"}
    finally:
        (root / "2").chmod(0o755)


def test_an_unreadable_directory_is_reported_and_the_rest_swept(
    locked: dict[str, Path], real_user_files_db: Database[Any]
) -> None:
    root = locked["root"]
    live = str(locked["locked"] / "live.csv")
    real_user_files_db["user_files"].insert_one(raw_record(5, 1, live))
    with permissions_apply():
        report = sweep(real_user_files_db, root, clock=later, remove_missing_records=True, max_remove="100%")
    assert report.removed_files == [str(root / "1" / "orphan.csv")]
    assert any(str(locked["locked"]) in error and "Permission denied" in error for error in report.errors)
    # The live record's file exists but could not be checked: not "missing", not deleted.
    assert report.missing_files == []
    assert report.removed_records == 0
    assert real_user_files_db["user_files"].count_documents({}) == 1
    locked["locked"].chmod(0o755)
    assert sorted(os.listdir(locked["locked"])) == ["live.csv", "orphan.csv"]


def test_the_command_exits_1_on_an_unreadable_directory(
    locked: dict[str, Path], mongod: LocalMongod, real_user_files_db: Database[Any]
) -> None:
    env = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_user_files_db.name}
    with permissions_apply():
        result = CliRunner(env=env).invoke(tools, ["sweep", "--root", str(locked["root"]), "--grace", "0"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert f"error: {locked['locked']}: Permission denied" in result.output
    assert not (locked["root"] / "1" / "orphan.csv").exists()


def test_a_nul_byte_in_a_record_path_is_reported_not_fatal(
    tmp_path: Path, real_user_files_db: Database[Any]
) -> None:
    root = tmp_path / "user_files"
    (root / "1").mkdir(parents=True)
    (root / "1" / "orphan.csv").write_text("data")
    (root / "1" / "live.csv").write_text("data")
    coll = real_user_files_db["user_files"]
    coll.insert_one(raw_record(1, 1, str(root / "1" / "live.csv")))
    coll.insert_one(raw_record(1, 2, str(root / "1" / "bad\0name.csv")))
    for _ in range(2):  # every later sweep works too
        report = sweep(real_user_files_db, root, clock=later, remove_missing_records=True, max_remove="100%")
        assert [r["file_id"] for r in report.outside_root] == [raw_record(1, 2, "")["file_id"]]
        assert report.errors == []
    assert not (root / "1" / "orphan.csv").exists()
    assert (root / "1" / "live.csv").exists()
    assert coll.count_documents({}) == 2  # the odd record is reported, never deleted


def test_a_file_renamed_into_place_with_an_old_mtime_is_young(
    tmp_path: Path, real_user_files_db: Database[Any]
) -> None:
    root = tmp_path / "user_files"
    (root / "1").mkdir(parents=True)
    upload = tmp_path / "incoming.csv"
    upload.write_text("data")
    old = time.time() - 3 * 3600
    os.utime(upload, (old, old))  # e.g. extracted from an archive, or copied with its times
    upload.rename(root / "1" / "upload.csv")  # its record is not written yet
    report = sweep(real_user_files_db, root)
    assert report.kept_young == 1
    assert report.removed_files == []
    assert (root / "1" / "upload.csv").exists()


CHURN = """
import os, shutil, sys
root = sys.argv[1]
n = 0
while True:
    user = os.path.join(root, str(n % 4))
    try:
        os.makedirs(user, exist_ok=True)
        for k in range(50):
            with open(os.path.join(user, f"{n}-{k}.csv"), "w") as f:
                f.write("x")
        shutil.rmtree(user, ignore_errors=True)
    except OSError:
        pass  # the sweep removed the directory first
    n += 1
"""


def test_files_and_directories_vanishing_during_the_walk(
    tmp_path: Path, real_user_files_db: Database[Any]
) -> None:
    root = tmp_path / "user_files"
    root.mkdir()
    # Another process (another cleaner, the bot's /reset) removing files and directories.
    churner = subprocess.Popen([sys.executable, "-c", CHURN, str(root)])
    try:
        deadline = time.monotonic() + 10
        while not any(root.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(60):
            report = sweep(real_user_files_db, root, clock=later, max_remove="100%", grace_seconds=0)
            assert report.errors == []
    finally:
        churner.kill()
        churner.wait()


def test_legacy_string_expiries_keep_their_files_unless_surely_past(
    tmp_path: Path, real_db: Database[Any]
) -> None:
    # Issue 9 item 4, the sweep's side: legacy strings in any ISO spelling are not compared as
    # text. A file is removed only when its record's string is past in every reading.
    now = dt.datetime.now(UTC)
    ahead, behind = now + dt.timedelta(hours=3), now - dt.timedelta(days=3)
    spellings = {
        "offset": ahead.astimezone(dt.timezone(dt.timedelta(hours=-5))).isoformat(),
        "zulu": ahead.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "space": ahead.strftime("%Y-%m-%d %H:%M:%S"),
        "basic": ahead.strftime("%Y%m%dT%H%M%S"),
        "naive-east": (ahead + dt.timedelta(hours=9)).replace(tzinfo=None).isoformat(),
        "garbled": "next tuesday",
        "year-1": "0001-01-01T00:00:00",  # in an eastern zone, before datetime.min: undecidable
        "year-9999": "9999-12-31T23:59:59",
        "past": behind.replace(tzinfo=None).isoformat(),
    }
    root = tmp_path / "user_files"
    (root / "1").mkdir(parents=True)
    real_db.create_collection("user_files")
    for n, (name, text) in enumerate(spellings.items()):
        (root / "1" / f"{name}.csv").write_text("data")
        document = raw_record(1, n, str(root / "1" / f"{name}.csv"))
        document["expires_at"] = text
        real_db["user_files"].insert_one(document)
    report = sweep(real_db, root, clock=later, max_remove="100%", legacy_timezone="Asia/Tokyo")
    assert report.removed_files == [str(root / "1" / "past.csv")]
    assert report.kept_live == len(spellings) - 1


def test_a_record_through_a_symlinked_directory(tmp_path: Path, real_user_files_db: Database[Any]) -> None:
    root, outside = tmp_path / "user_files", tmp_path / "outside"
    (root / "1").mkdir(parents=True)
    outside.mkdir()
    (root / "1" / "kept.csv").write_text("data")
    (root / "alias").symlink_to(root / "1", target_is_directory=True)  # inside the root
    (root / "away").symlink_to(outside, target_is_directory=True)  # leading out
    coll = real_user_files_db["user_files"]
    coll.insert_one(raw_record(1, 1, str(root / "alias" / "kept.csv")))
    coll.insert_one(raw_record(1, 2, str(root / "away" / "never-there.csv")))
    report = sweep(real_user_files_db, root, clock=later, remove_missing_records=True, max_remove="100%")
    assert (root / "1" / "kept.csv").exists()  # claimed through the alias: kept, never followed
    assert report.kept_live == 1
    assert [r["file_id"] for r in report.outside_root] == [raw_record(1, 2, "")["file_id"]]
    assert report.missing_files == []
    assert coll.count_documents({}) == 2
