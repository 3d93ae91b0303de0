"""The disk sweep on a temporary storage root, against the real server."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database

from tests.helpers import file_data
from userfiles_db import ConfigurationError, UserFiles
from userfiles_db.cli import tools
from userfiles_db.clock import UTC
from userfiles_db.disk import inside, remove_record_files, storage_root, sweep
from userfiles_db.local_server import LocalMongod

HOUR_AGO = time.time() - 2 * 3600


def later() -> dt.datetime:
    """The sweep's clock two hours on: every file written now is past the default grace."""
    return dt.datetime.now(UTC) + dt.timedelta(hours=2)


def make_file(path: Path, *, old: bool = True) -> Path:
    """A file at ``<tmp>/<root>/<user>/<name>``; ``old=False``: one written at ``later()``'s "now"
    (a future mtime here), so it is within the grace period for a sweep on that clock. Such a
    file is staged in ``<tmp>/staging`` and renamed into place with its mtime already set: a
    sweep never sees it young-but-unstamped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if old:
        path.write_text("data")
        os.utime(path, (HOUR_AGO, HOUR_AGO))
        return path
    staging = path.parents[2] / "staging" / f"{path.parent.name}-{path.name}"
    staging.parent.mkdir(exist_ok=True)
    staging.write_text("data")
    stamp = time.time() + 3 * 3600
    os.utime(staging, (stamp, stamp))
    staging.rename(path)
    return path


def record_for(store: UserFiles, user_id: int, n: int, path: Path | str, **extra: Any) -> None:
    store.save_user_file(file_data(user_id, n, file_path=str(path), **extra))


@pytest.fixture
def layout(tmp_path: Path, real_user_files_db: Database[Any]) -> dict[str, Any]:
    """A storage root with every kind of file the sweep must tell apart."""
    root = tmp_path / "user_files"
    outside = tmp_path / "outside"
    store = UserFiles(real_user_files_db)
    files = {
        "live": make_file(root / "1" / "live.csv"),
        "orphan": make_file(root / "1" / "orphan.csv"),
        "young": make_file(root / "1" / "young.csv", old=False),
        "expired": make_file(root / "2" / "expired.csv"),
        "secret": make_file(outside / "secret.txt"),
        "outside_dir_file": make_file(outside / "dir" / "f.txt"),
    }
    record_for(store, 1, 1, files["live"])
    record_for(store, 2, 2, files["expired"], expires_at=dt.datetime.now(UTC) - dt.timedelta(hours=1))
    record_for(store, 3, 3, files["secret"])  # a record pointing outside the root
    record_for(store, 3, 4, str(root / ".." / "outside" / "secret.txt"))  # .. leading out
    record_for(store, 3, 5, root / "3" / "vanished.csv")  # a live record whose file is gone
    (root / "1" / "link.txt").symlink_to(files["secret"])  # a symlink to an outside file
    (root / "linked_dir").symlink_to(outside / "dir", target_is_directory=True)
    (root / "4").mkdir()  # an empty per-user directory
    for directory in ("2", "4"):  # untouched for hours (a young directory is kept)
        os.utime(root / directory, (HOUR_AGO, HOUR_AGO))
    return {"root": root, "outside": outside, "files": files, "store": store}


def test_sweep_removes_orphans_and_touches_nothing_outside(
    layout: dict[str, Any], real_user_files_db: Database[Any]
) -> None:
    root, files = layout["root"], layout["files"]
    report = sweep(real_user_files_db, root, clock=later)
    assert sorted(report.removed_files) == sorted(str(files[k]) for k in ("orphan", "expired"))
    assert report.kept_live == 1
    assert report.kept_young == 1
    assert sorted(report.removed_dirs) == sorted([str(root / "2"), str(root / "4")])
    assert [r["file_id"] for r in report.missing_files] == [file_data(3, 5)["file_id"]]
    assert report.removed_records == 0
    assert len(report.outside_root) == 2
    assert sorted(report.skipped_symlinks) == sorted([str(root / "1" / "link.txt"), str(root / "linked_dir")])
    for key in ("live", "young", "secret", "outside_dir_file"):
        assert files[key].exists(), key
    assert (root / "1" / "link.txt").is_symlink()
    assert root.is_dir()


def test_dry_run_removes_nothing(layout: dict[str, Any], real_user_files_db: Database[Any]) -> None:
    before = sorted(str(p) for p in layout["root"].rglob("*"))
    report = sweep(real_user_files_db, layout["root"], dry_run=True, remove_missing_records=True, clock=later)
    assert len(report.removed_files) == 2
    assert len(report.removed_dirs) == 2
    assert report.removed_records == 0
    assert sorted(str(p) for p in layout["root"].rglob("*")) == before
    # Nothing deleted by the dry run; the expired record is the TTL monitor's to delete at any
    # moment (it runs every second on the test server), so it is not counted.
    expired_id = file_data(2, 2)["file_id"]
    assert real_user_files_db["user_files"].count_documents({"file_id": {"$ne": expired_id}}) == 4


def test_records_whose_file_is_gone_are_removed_when_asked(
    layout: dict[str, Any], real_user_files_db: Database[Any]
) -> None:
    report = sweep(real_user_files_db, layout["root"], remove_missing_records=True, clock=later)
    assert report.removed_records == 1
    assert real_user_files_db["user_files"].find_one({"file_id": file_data(3, 5)["file_id"]}) is None


def test_removing_record_files_stays_inside_the_root(layout: dict[str, Any]) -> None:
    root, files = layout["root"], layout["files"]
    records: list[dict[str, Any]] = [
        {"file_path": str(files["secret"])},
        {"file_path": str(root / ".." / "outside" / "secret.txt")},
        {"file_path": str(root / "1" / "link.txt")},
        {"file_path": "relative/path.csv"},
        {"file_path": None},
        {"file_path": str(files["orphan"])},
        {"file_path": str(root / "1" / "already-gone.csv")},
    ]
    assert remove_record_files(root, records) == [str(files["orphan"])]
    assert files["secret"].exists()
    assert inside(storage_root(root), str(root)) is None  # the root itself is not "inside"


def test_a_sweep_during_uploads_loses_no_live_file(tmp_path: Path, real_user_files_db: Database[Any]) -> None:
    root = tmp_path / "user_files"
    root.mkdir()
    store = UserFiles(real_user_files_db, max_files_per_user=1000)
    for n in range(20):
        make_file(root / "9" / f"orphan{n}.csv")
    for user in range(5):  # the users' directories exist (an empty one may go, as documented)
        make_file(root / str(user) / "young.csv", old=False)
    stop = threading.Event()
    saved: list[Path] = []

    def upload() -> None:  # as the bot: the file first, then its record
        n = 0
        while not stop.is_set():
            path = make_file(root / str(n % 5) / f"upload{n}.csv", old=False)
            record_for(store, n % 5, n, path)
            saved.append(path)
            n += 1

    uploader = threading.Thread(target=upload)
    uploader.start()
    try:
        for _ in range(15):
            sweep(real_user_files_db, root, grace_seconds=30, clock=later, max_remove="100%")
    finally:
        stop.set()
        uploader.join()
    assert saved
    assert all(p.exists() for p in saved), "a live file was removed"
    assert not list((root / "9").glob("orphan*"))


def test_bad_roots_are_refused(tmp_path: Path, real_user_files_db: Database[Any]) -> None:
    with pytest.raises(ConfigurationError, match="not a directory"):
        sweep(real_user_files_db, tmp_path / "missing")
    with pytest.raises(ConfigurationError, match="grace"):
        sweep(real_user_files_db, tmp_path, grace_seconds=-1)


def test_sweep_command(
    layout: dict[str, Any], mongod: LocalMongod, real_user_files_db: Database[Any]
) -> None:
    env = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_user_files_db.name}
    runner = CliRunner(env=env)
    time.sleep(1.1)  # the command runs on the real clock: let the "old" files pass a 1 s grace
    sweep_args = ["sweep", "--root", str(layout["root"]), "--grace", "1"]
    result = runner.invoke(tools, [*sweep_args, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"Swept {layout['root']}: would remove 2 orphan file(s) and 2 empty directory(ies); "
        "kept 1 live and 1 young file(s)."
    )
    result = runner.invoke(tools, [*sweep_args, "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["removed_files"]) == 2
    result = runner.invoke(tools, ["sweep", "--root", str(layout["root"] / "nope")])
    assert result.exit_code == 2
    assert "is not a directory" in result.output
