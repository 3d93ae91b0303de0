"""The files on disk next to the records: safe removal, and the sweep that keeps both in step.

Nothing here ever touches a path outside the storage root: not through a record's ``file_path``
pointing elsewhere, not through ``..``, not by following a symlink.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pymongo.database import Database

from userfiles_db.clock import Clock, read_clock, utc_now
from userfiles_db.errors import ConfigurationError
from userfiles_db.records import LegacyTime, live_filter

DEFAULT_GRACE_SECONDS = 3600.0


def storage_root(root: str | Path) -> Path:
    """``root`` resolved (symlinks included); raises ``ConfigurationError`` unless it is a directory."""
    real = Path(os.path.realpath(root))
    if not real.is_dir():
        raise ConfigurationError(f"storage root {str(root)!r} is not a directory")
    return real


def inside(root: Path, path: object) -> Path | None:
    """The real path of ``path`` if it is an absolute path to something strictly inside ``root``
    (a resolved root) and not itself a symlink; ``None`` otherwise. Parent symlinks and ``..`` are
    resolved first, so they cannot lead out of the root."""
    if not isinstance(path, str) or not os.path.isabs(path):
        return None
    if os.path.islink(path):
        return None
    real = Path(os.path.realpath(path))
    return real if root in real.parents else None


def remove_record_files(root: str | Path, records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Remove the files of ``records`` (evicted or deleted ones) that lie inside ``root``; return
    the paths removed. Missing files are fine; paths outside the root are left alone."""
    base = storage_root(root)
    removed = []
    for record in records:
        path = inside(base, record.get("file_path"))
        if path is None:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(str(path))
    return removed


@dataclass
class SweepReport:
    """What a sweep did (or, in a dry run, would do)."""

    root: str
    dry_run: bool
    removed_files: list[str] = field(default_factory=list)
    kept_live: int = 0
    kept_young: int = 0
    skipped_symlinks: list[str] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)
    missing_files: list[dict[str, Any]] = field(default_factory=list)
    removed_records: int = 0
    outside_root: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _live_records(collection: Any, now: dt.datetime, legacy: LegacyTime) -> list[dict[str, Any]]:
    projection = {"_id": 0, "file_id": 1, "user_id": 1, "file_path": 1}
    return list(collection.find(live_filter(now, legacy), projection))


def _live_paths(records: list[dict[str, Any]]) -> set[str]:
    return {
        os.path.realpath(r["file_path"])
        for r in records
        if isinstance(r.get("file_path"), str) and os.path.isabs(r["file_path"])
    }


def sweep(
    database: Database[Any],
    root: str | Path,
    *,
    grace_seconds: float = DEFAULT_GRACE_SECONDS,
    dry_run: bool = False,
    remove_missing_records: bool = False,
    collection: str = "user_files",
    clock: Clock = utc_now,
    legacy_timezone: str = "UTC",
) -> SweepReport:
    """Bring the storage root in step with the live records.

    - Removes files under ``root`` that no live record points to (TTL-deleted, evicted, left by a
      failed upload) once older than ``grace_seconds``: the bot writes a file before its record,
      so a young file may be an upload in flight. The live records are read twice, before and after
      the walk, and a file is only removed if neither read claims it.
    - Reports live records whose file is missing; deletes those records when
      ``remove_missing_records``. Records pointing outside the root are reported, never touched.
    - Removes empty directories below the root (older than the grace period).
    - Never follows a symlink and never touches anything outside the root.

    Raises ``ConfigurationError`` if ``root`` is not a directory; database errors propagate.
    """
    if grace_seconds < 0:
        raise ConfigurationError(f"grace must be at least 0 seconds, got {grace_seconds}")
    base = storage_root(root)
    report = SweepReport(root=str(base), dry_run=dry_run)
    coll = database[collection]
    legacy = LegacyTime.named(legacy_timezone)
    now = read_clock(clock)
    cutoff = now.timestamp() - grace_seconds
    claimed = _live_paths(_live_records(coll, now, legacy))

    candidates: list[str] = []
    directories: list[tuple[str, float, list[str]]] = []  # bottom-up, with pre-sweep mtimes
    for dirpath, dirnames, filenames in os.walk(base, topdown=False, followlinks=False):
        for name in dirnames:  # not descended into when they are links (followlinks=False)
            if os.path.islink(os.path.join(dirpath, name)):
                report.skipped_symlinks.append(os.path.join(dirpath, name))
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                report.skipped_symlinks.append(path)
            elif path in claimed:
                report.kept_live += 1
            elif os.lstat(path).st_mtime > cutoff:
                report.kept_young += 1
            else:
                candidates.append(path)
        if dirpath != str(base):
            directories.append((dirpath, os.lstat(dirpath).st_mtime, dirnames + filenames))

    records = _live_records(coll, read_clock(clock), legacy)
    claimed |= _live_paths(records)
    gone: set[str] = set()
    for path in candidates:
        if path in claimed:
            report.kept_live += 1
            continue
        if not dry_run:
            try:
                os.unlink(path)  # never a symlink: those were skipped above
            except FileNotFoundError:
                pass
            except OSError as exc:
                report.errors.append(f"{path}: {exc.strerror}")
                continue
        gone.add(path)
        report.removed_files.append(path)

    for dirpath, mtime, names in directories:
        emptied = all(os.path.join(dirpath, n) in gone for n in names)
        if not emptied or mtime > cutoff:
            continue
        if not dry_run:
            try:
                os.rmdir(dirpath)  # fails, harmlessly, if a file arrived meanwhile
            except OSError:
                continue
        gone.add(dirpath)
        report.removed_dirs.append(dirpath)

    _check_records(coll, base, records, report, remove_missing_records and not dry_run)
    return report


def _check_records(
    coll: Any, base: Path, records: list[dict[str, Any]], report: SweepReport, remove: bool
) -> None:
    for record in records:
        summary = {k: record.get(k) for k in ("file_id", "user_id", "file_path")}
        path = inside(base, record.get("file_path"))
        if path is None:
            report.outside_root.append(summary)
        elif not os.path.lexists(path):
            report.missing_files.append(summary)
            if remove:
                # Only this record as it was read: one re-saved meanwhile with a new path stays.
                result = coll.delete_one({"file_id": record["file_id"], "file_path": record["file_path"]})
                report.removed_records += result.deleted_count
