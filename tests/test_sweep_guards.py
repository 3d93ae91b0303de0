"""The sweep refuses what looks like a wrong database or root, and maps the bot's container path
to where the volume is mounted here (issue 8). On the real server."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database

from userfiles_db import ConfigurationError
from userfiles_db.cli import tools
from userfiles_db.clock import UTC
from userfiles_db.disk import RemoveLimit, SweepRefused, sweep
from userfiles_db.local_server import LocalMongod

BOT_ROOT = "/tmp/bot_code_interpreter/user_files"  # the path inside the bot's container
USER = 987654321098765432


def later() -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(hours=2)


def record(n: int, path: str, *, live: bool = True) -> dict[str, Any]:
    now = dt.datetime.now(UTC)
    return {
        "file_id": f"{USER}_{1700000000 + n}_{n:08x}",
        "user_id": USER,
        "filename": f"f{n}.csv",
        "file_type": "csv",
        "file_path": path,
        "size": 4,
        "created_at": now,
        "expires_at": now + dt.timedelta(hours=48 if live else -1),
    }


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def volume(tmp_path: Path, real_user_files_db: Database[Any]) -> dict[str, Any]:
    """The bot's docker-compose layout: its records say the container path, and here the named
    volume is mounted at another path. 10 live files, 4 orphans, 1 record whose file is gone."""
    local = tmp_path / "volumes" / "bot_files" / "_data"
    user_dir = local / str(USER)
    user_dir.mkdir(parents=True)
    coll = real_user_files_db["user_files"]
    for n in range(10):
        (user_dir / f"live{n}.csv").write_text("data")
        coll.insert_one(record(n, f"{BOT_ROOT}/{USER}/live{n}.csv"))
    for n in range(4):
        (user_dir / f"orphan{n}.csv").write_text("data")
    coll.insert_one(record(20, f"{BOT_ROOT}/{USER}/gone.csv"))
    coll.insert_one(record(21, f"{BOT_ROOT}/{USER}/orphan0.csv", live=False))  # expired
    return {"root": local, "user_dir": user_dir, "db": real_user_files_db}


def test_records_under_another_root_are_refused_without_a_mapping(volume: dict[str, Any]) -> None:
    before = tree(volume["root"])
    with pytest.raises(SweepRefused, match=r"none of the 11 live record\(s\) points inside .*--records-root"):
        sweep(volume["db"], volume["root"], clock=later, max_remove="100%")
    assert tree(volume["root"]) == before


def test_records_root_maps_the_container_path_to_the_local_mount(volume: dict[str, Any]) -> None:
    report = sweep(
        volume["db"], volume["root"], clock=later, records_root=BOT_ROOT, remove_missing_records=True
    )
    user_dir = volume["user_dir"]
    assert sorted(report.removed_files) == [str(user_dir / f"orphan{n}.csv") for n in range(4)]
    assert report.kept_live == 10
    assert [r["file_path"] for r in report.missing_files] == [f"{BOT_ROOT}/{USER}/gone.csv"]
    assert report.removed_records == 1
    assert report.outside_root == []
    assert sorted(os.listdir(user_dir)) == [f"live{n}.csv" for n in range(10)]
    assert report.records_root == [BOT_ROOT]


def test_a_missing_collection_is_refused(tmp_path: Path, real_db: Database[Any]) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "a.csv").write_text("data")
    with pytest.raises(SweepRefused, match="has no collection 'user_files'"):
        sweep(real_db, tmp_path, clock=later, max_remove="100%")
    assert (tmp_path / "1" / "a.csv").exists()
    assert real_db.list_collection_names() == []  # and nothing was created


def test_removing_more_than_max_remove_is_refused(tmp_path: Path, real_user_files_db: Database[Any]) -> None:
    root = tmp_path / "user_files"
    (root / "1").mkdir(parents=True)
    coll = real_user_files_db["user_files"]
    for n in range(30):
        (root / "1" / f"{n}.csv").write_text("data")
        if n < 10:
            coll.insert_one(record(n, str(root / "1" / f"{n}.csv")))
    before = tree(root)
    # 20 of 30 files would go: more than 50% (15), more than 19.
    for limit in ("50%", "19", 19, "0"):
        with pytest.raises(SweepRefused, match=r"would remove 20 of the 30 files .* allows"):
            sweep(real_user_files_db, root, clock=later, max_remove=limit)
        with pytest.raises(SweepRefused):
            sweep(real_user_files_db, root, clock=later, max_remove=limit, dry_run=True)
    assert tree(root) == before
    report = sweep(real_user_files_db, root, clock=later, max_remove="20")
    assert len(report.removed_files) == 20
    assert len(os.listdir(root / "1")) == 10


def test_a_small_idle_store_may_be_emptied(tmp_path: Path, real_user_files_db: Database[Any]) -> None:
    # Every file expired while the bot was idle: 100% of 3, but a share always allows 10.
    (tmp_path / "1").mkdir()
    for n in range(3):
        (tmp_path / "1" / f"{n}.csv").write_text("data")
    report = sweep(real_user_files_db, tmp_path, clock=later)
    assert len(report.removed_files) == 3


def test_deleting_records_of_an_unmounted_volume_is_refused(volume: dict[str, Any]) -> None:
    empty = volume["root"].parent / "not_mounted"
    empty.mkdir()
    with pytest.raises(SweepRefused, match=r"would delete 11 of the 11 live records .* mounted"):
        sweep(volume["db"], empty, clock=later, records_root=BOT_ROOT, remove_missing_records=True)
    assert volume["db"]["user_files"].count_documents({}) == 12
    # Without deleting records there is nothing to refuse: the missing files are reported.
    report = sweep(volume["db"], empty, clock=later, records_root=BOT_ROOT)
    assert len(report.missing_files) == 11


def test_remove_limits_parse() -> None:
    assert RemoveLimit.parse("50%") == RemoveLimit(percent=50.0)
    assert RemoveLimit.parse(" 7 ") == RemoveLimit(count=7)
    assert RemoveLimit.parse(0).allowed(1000) == 0
    assert RemoveLimit.parse("10%").allowed(1000) == 100
    assert RemoveLimit.parse("10%").allowed(20) == 10  # a share always allows 10
    assert RemoveLimit.parse("100%").allowed(5) == 10
    for bad in ("", "-1", "101%", "x", "1.5", "nan%", "%", True):
        with pytest.raises(ConfigurationError, match="max-remove"):
            RemoveLimit.parse(bad)


def test_the_command_refuses_with_exit_3(volume: dict[str, Any], mongod: LocalMongod, tmp_path: Path) -> None:
    env = {"MONGODB_URI": mongod.uri, "MONGODB_DB": volume["db"].name}
    runner = CliRunner(env=env)
    root = str(volume["root"])
    before = tree(volume["root"])

    result = runner.invoke(tools, ["sweep", "--root", root, "--grace", "0"])
    assert result.exit_code == 3, result.output
    assert "Error: refused: none of the 11 live record(s) points inside" in result.output
    assert "Nothing was removed." in result.output

    result = runner.invoke(tools, ["sweep", "--root", root, "--db", "myFirstDatabase"])
    assert result.exit_code == 3, result.output
    assert "Error: refused: database 'myFirstDatabase' has no collection 'user_files'" in result.output

    result = runner.invoke(tools, ["sweep", "--root", root, "--max-remove", "lots"])
    assert result.exit_code == 2, result.output
    assert "max-remove: expected a count (e.g. 100) or a percentage (e.g. 50%), got 'lots'" in result.output
    assert tree(volume["root"]) == before

    mapped = ["sweep", "--root", root, "--records-root", BOT_ROOT, "--grace", "0"]
    result = runner.invoke(tools, [*mapped, "--max-remove", "3"])
    assert result.exit_code == 3, result.output
    assert "would remove 4 of the 14 files" in result.output
    assert tree(volume["root"]) == before

    result = runner.invoke(tools, [*mapped, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"Swept {root}: would remove 4 orphan file(s) and 0 empty directory(ies); "
        "kept 10 live and 0 young file(s)."
    )
    assert tree(volume["root"]) == before
    result = runner.invoke(tools, mapped)
    assert result.exit_code == 0, result.output
    assert len(os.listdir(volume["user_dir"])) == 10


def test_a_relative_records_root_is_a_usage_error(volume: dict[str, Any], mongod: LocalMongod) -> None:
    env = {"MONGODB_URI": mongod.uri, "MONGODB_DB": volume["db"].name}
    args = ["sweep", "--root", str(volume["root"]), "--records-root", "tmp/user_files"]
    result = CliRunner(env=env).invoke(tools, args)
    assert result.exit_code == 2, result.output
    assert "Error: records root 'tmp/user_files' must be an absolute path" in result.output
