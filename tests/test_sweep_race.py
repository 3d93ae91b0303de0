"""Removal under attack: a directory swapped for a symlink to the outside while the sweep and
``remove_record_files`` run (issue 9 item 2). Bounded: a fixed number of rounds."""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime as dt
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from userfiles_db.clock import UTC
from userfiles_db.disk import remove_record_files, sweep

NAMES = [f"f{n:03d}.csv" for n in range(60)]
ROUNDS = 12
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def later() -> dt.datetime:
    return dt.datetime.now(UTC) + dt.timedelta(hours=2)


def exchanger(scratch: Path) -> Callable[[str, str], None]:
    """Atomically exchange two names (renameat2 RENAME_EXCHANGE), or swap them with three
    renames where the C library lacks renameat2."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)

    def exchange(a: str, b: str) -> None:
        assert renameat2 is not None
        if renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
            raise OSError(ctypes.get_errno(), "renameat2")

    def swap(a: str, b: str) -> None:
        parked = a + ".parked"
        os.rename(a, parked)
        os.rename(b, a)
        os.rename(parked, b)

    if renameat2 is not None:
        probe_a, probe_b = str(scratch / "probe-a"), str(scratch / "probe-b")
        try:
            os.mkdir(probe_a)
            os.symlink("/", probe_b)
            exchange(probe_a, probe_b)
            return exchange
        except OSError:
            return swap
        finally:
            for probe in (probe_a, probe_b):
                if os.path.islink(probe):
                    os.unlink(probe)
                elif os.path.isdir(probe):
                    os.rmdir(probe)
    return swap


class Attack:
    """``root/u`` (a real directory, files inside) and ``root/l`` (a symlink to ``outside``, which
    holds files with the same names) exchanged in a loop by another thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "user_files"
        self.outside = tmp_path / "outside"
        self.root.mkdir()
        self.outside.mkdir()
        (self.root / "u").mkdir()
        keep = self.root / "u" / "young.csv"  # keeps u from being swept away as an empty directory
        keep.write_text("young")
        future = dt.datetime.now(UTC).timestamp() + 3 * 3600
        os.utime(keep, (future, future))
        (self.root / "l").symlink_to(self.outside, target_is_directory=True)
        for name in NAMES:
            (self.outside / name).write_text("outside")
        self.exchange = exchanger(tmp_path)
        self.swaps = 0

    def real_user_dir(self) -> Path:
        return next(p for p in (self.root / "u", self.root / "l") if not p.is_symlink())

    def refill(self) -> None:
        for name in NAMES:
            (self.real_user_dir() / name).write_text("inside")

    @property
    def outside_files(self) -> list[str]:
        return sorted(p.name for p in self.outside.iterdir())

    @staticmethod
    def tree_of(path: Path) -> set[str]:
        return {str(p.relative_to(path)) for p in path.rglob("*")}

    def _swap_loop(self, a: str, b: str, stop: threading.Event) -> None:
        while not stop.is_set():
            self.exchange(a, b)
            self.swaps += 1

    def rounds(self) -> Iterator[None]:
        a, b = str(self.root / "u"), str(self.root / "l")
        for _ in range(ROUNDS):
            self.refill()
            stop = threading.Event()
            swapper = threading.Thread(target=self._swap_loop, args=(a, b, stop))
            swapper.start()
            try:
                yield
            finally:
                stop.set()
                swapper.join()


@pytest.fixture
def attack(tmp_path: Path) -> Attack:
    return Attack(tmp_path)


def test_the_sweep_never_removes_through_a_swapped_symlink(
    attack: Attack, real_user_files_db: Database[Any]
) -> None:
    removed = 0
    for _ in attack.rounds():
        for _ in range(3):
            report = sweep(real_user_files_db, attack.root, clock=later, max_remove="100%")
            removed += len(report.removed_files)
            assert all(not p.startswith(str(attack.outside)) for p in report.removed_files)
    assert attack.swaps > 0
    assert removed > 0  # the sweep did remove the orphans inside the root
    assert attack.outside_files == NAMES, "a file outside the root was removed"
    assert all((attack.outside / name).read_text() == "outside" for name in NAMES)
    assert (attack.root / "l").is_symlink() != (attack.root / "u").is_symlink()


def test_removing_record_files_never_follows_a_swapped_symlink(attack: Attack) -> None:
    records = [{"file_path": str(attack.root / "u" / name)} for name in NAMES]
    removed = 0
    for _ in attack.rounds():
        for _ in range(3):
            removed += len(remove_record_files(attack.root, records))
    assert attack.swaps > 0
    assert removed > 0
    assert attack.outside_files == NAMES, "a file outside the root was removed"


def test_record_paths_through_a_symlink_are_never_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "user_files", tmp_path / "outside"
    (root / "1").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.csv").write_text("outside")
    (root / "link").symlink_to(outside, target_is_directory=True)
    (root / "1" / "file-link.csv").symlink_to(outside / "x.csv")
    (root / "1" / "sub").mkdir()
    (root / "1" / "fifo").touch()
    records = [
        {"file_path": str(root / "link" / "x.csv")},  # through a directory symlink
        {"file_path": str(root / "1" / "file-link.csv")},  # a symlink itself
        {"file_path": str(root / "1" / "sub")},  # a directory
        {"file_path": str(root / "1" / "sub" / ".." / ".." / ".." / "outside" / "x.csv")},
        {"file_path": str(root / "1" / "fi\0fo")},  # NUL
        {"file_path": "/"},
        {"file_path": str(root)},
    ]
    assert remove_record_files(root, records) == []
    assert (outside / "x.csv").read_text() == "outside"
    assert (root / "1" / "file-link.csv").is_symlink()
    assert (root / "1" / "sub").is_dir()
