"""The files on disk next to the records: safe removal, and the sweep that keeps both in step.

Nothing here ever touches a path outside the storage root: not through a record's ``file_path``
pointing elsewhere, not through ``..``, not by following a symlink, not even when another process
swaps a directory for a symlink while we work. Like ``shutil.rmtree`` on Linux, every directory
below the root is opened relative to its parent's file descriptor with ``O_NOFOLLOW``, and every
file is examined and unlinked through its directory's descriptor (``dir_fd=``): a path is never
re-resolved by name once its directory is open, so a swapped-in symlink is never followed.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import math
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pymongo.database import Database

from userfiles_db.clock import Clock, read_clock, utc_now
from userfiles_db.errors import ConfigurationError, UserFilesError
from userfiles_db.records import LegacyTime

logger = logging.getLogger("userfiles_db.disk")

DEFAULT_GRACE_SECONDS = 3600.0
DEFAULT_MAX_REMOVE = "50%"
# A percentage limit always allows this many, so a small store whose files all expired while the
# bot was idle can still be emptied by the sweep.
MIN_REMOVE_ALLOWANCE = 10
# Deeper than any layout the bot writes (<root>/<user_id>/<file>); bounds the open descriptors.
MAX_DEPTH = 64
# A legacy string expiry is taken as expired only when it is this far in the past: no reading of
# its zone or offset can make it live then.
LEGACY_MARGIN = dt.timedelta(hours=26)
EXIT_REFUSED = 3

_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = _ROOT_FLAGS | os.O_NOFOLLOW | os.O_NONBLOCK
# "This name is not a plain directory any more" (a symlink or a file swapped in) or it is gone.
_NOT_A_DIRECTORY = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}


class SweepRefused(UserFilesError):
    """The sweep found what looks like a wrong database or a wrong root, and removed nothing."""

    exit_code = EXIT_REFUSED


def storage_root(root: str | Path) -> Path:
    """``root`` resolved (symlinks included); raises ``ConfigurationError`` unless it is a directory."""
    try:
        real = Path(os.path.realpath(root))
        is_dir = real.is_dir()
    except (OSError, ValueError):
        is_dir = False
    if not is_dir:
        raise ConfigurationError(f"storage root {str(root)!r} is not a directory")
    return real


@dataclass(frozen=True)
class PathMap:
    """How the records' paths map to the local storage root.

    ``records_roots`` are the directories the records' ``file_path`` values start with (the
    bot's container path when the sweep runs elsewhere); ``local`` is where that directory is on
    this machine (resolved). A record path maps inside the root when, written out lexically
    (``..`` applied), it lies strictly below one of ``records_roots``, or below the local root
    itself (``also``: a record written when the bot ran where the sweep runs names the local file).
    """

    local: str
    records_roots: tuple[str, ...]
    also: tuple[str, ...] = ()  # the local root as given and resolved, when not in records_roots

    @classmethod
    def make(cls, root: str | Path, records_root: str | Path | None = None) -> PathMap:
        """Raises ``ConfigurationError`` for a root that is not a directory or a relative
        ``records_root``."""
        local = str(storage_root(root))
        given = os.path.normpath(os.path.abspath(root))
        if records_root is None:
            roots = tuple(dict.fromkeys([given, local]))
        else:
            text = str(records_root)
            if "\0" in text or not os.path.isabs(text):
                raise ConfigurationError(f"records root {text!r} must be an absolute path")
            roots = (os.path.normpath(text),)
        # A record that names the local root itself (written when the bot ran here) means the
        # local file too: it keeps claiming it, whatever --records-root says.
        also = tuple(path for path in dict.fromkeys([given, local]) if path not in roots)
        return cls(local, roots, also)

    def relative(self, path: object) -> str | None:
        """``path`` relative to the root, normalised (no ``.``, ``..`` or empty parts); ``None`` if
        it is not a usable absolute path strictly inside the root (NUL bytes, other types,
        undecodable text included)."""
        if not isinstance(path, str) or "\0" in path or not os.path.isabs(path):
            return None
        try:
            os.fsencode(path)
        except UnicodeError:
            return None
        # The bot's paths are already normal: skip normpath (most of the cost at scale) for them.
        needs_normpath = "//" in path or "/." in path or path.endswith("/")
        normal = os.path.normpath(path) if needs_normpath else path
        for prefix in self.records_roots + self.also:
            base = prefix.rstrip(os.sep) + os.sep
            if normal.startswith(base) and len(normal) > len(base):
                return normal[len(base) :]
        return None

    def local_path(self, relative: str) -> str:
        return os.path.join(self.local, relative)


def inside(root: Path, path: object) -> Path | None:
    """The local path of ``path`` if it is an absolute path strictly inside ``root`` (a resolved
    root), after ``..`` is applied lexically; ``None`` otherwise. Symlinks are not looked at here:
    the removal itself never follows one."""
    relative = PathMap(str(root), (str(root),)).relative(path)
    return None if relative is None else root / relative


@contextmanager
def _opened(path: str, flags: int, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, flags, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_parent(root_fd: int, parts: list[str]) -> int:
    """A descriptor of the directory ``parts`` below ``root_fd``, each component opened relative to
    the previous one without following symlinks. Raises ``OSError``."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlink_regular(root_fd: int, relative: str) -> bool:
    """Unlink ``relative`` below ``root_fd`` if it is a regular file reached through plain
    directories only; ``False`` when it is not there (or not a regular file, or behind a symlink).
    Raises ``OSError`` for anything else (permission, I/O)."""
    *parts, name = relative.split(os.sep)
    try:
        fd = _open_parent(root_fd, parts)
    except OSError as exc:
        if exc.errno in _NOT_A_DIRECTORY:
            return False
        raise
    try:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        try:
            # unlink never follows a link: if the name was swapped since the stat, what goes is
            # the swapped-in entry itself, in this directory inside the root.
            os.unlink(name, dir_fd=fd)
        except FileNotFoundError:
            return False
        return True
    finally:
        os.close(fd)


def remove_record_files(root: str | Path, records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Remove the files of ``records`` (evicted or deleted ones) that lie inside ``root``; return
    the local paths removed.

    Only regular files strictly inside the root are removed, reached through real directories:
    paths outside the root (or leading out through ``..``), symlinks at any component, directories
    and special files are left alone, and so are missing files. A file that cannot be removed
    (permission) is logged and skipped. Raises ``ConfigurationError`` if ``root`` is not a directory.
    """
    paths = PathMap.make(root)
    removed: list[str] = []
    with _opened(paths.local, _ROOT_FLAGS) as root_fd:
        for record in records:
            relative = paths.relative(record.get("file_path"))
            if relative is None:
                continue
            try:
                if _unlink_regular(root_fd, relative):
                    removed.append(paths.local_path(relative))
            except OSError as exc:
                logger.warning("could not remove %s: %s", paths.local_path(relative), exc.strerror)
    return removed


@dataclass(frozen=True)
class RemoveLimit:
    """``--max-remove``: at most ``count`` removals, or at most ``percent`` of what there is (and
    always at least ``MIN_REMOVE_ALLOWANCE``)."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, value: str | int | RemoveLimit) -> RemoveLimit:
        """``"N"`` / ``N`` (a count) or ``"P%"`` (0 to 100); raises ``ConfigurationError``."""
        if isinstance(value, RemoveLimit):
            return value
        if isinstance(value, bool):
            raise ConfigurationError(f"max-remove: expected a count or a percentage, got {value!r}")
        text = str(value).strip()
        try:
            if text.endswith("%"):
                percent = float(text[:-1])
                if not math.isfinite(percent) or not 0 <= percent <= 100:
                    raise ValueError
                return cls(percent=percent)
            count = int(text)
            if count < 0:
                raise ValueError
            return cls(count=count)
        except ValueError:
            raise ConfigurationError(
                f"max-remove: expected a count (e.g. 100) or a percentage (e.g. 50%), got {value!r}"
            ) from None

    def allowed(self, total: int) -> int:
        if self.count is not None:
            return self.count
        share = math.floor(total * (self.percent or 0.0) / 100)
        return max(share, MIN_REMOVE_ALLOWANCE)

    def __str__(self) -> str:
        return str(self.count) if self.count is not None else f"{self.percent:g}%"


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
    records_root: list[str] = field(default_factory=list)
    files_seen: int = 0
    live_records: int = 0
    skipped_special: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: record.get(k) for k in ("file_id", "user_id", "file_path")}


class _Claims:
    """The files live records point to, as 64-bit hashes of their resolved local paths.

    Hashes keep the memory per record small and fixed; a collision can only make the sweep keep
    a file, never remove one. Each record's directory is resolved once (cached per directory),
    so a record reached through a symlinked directory inside the root still claims its file.
    """

    def __init__(self, paths: PathMap) -> None:
        self.paths = paths
        self.hashes: set[int] = set()
        self._dirs: dict[str, str] = {}

    def local_key(self, relative: str) -> str:
        directory, _, name = relative.rpartition(os.sep)
        real = self._dirs.get(directory)
        if real is None:
            if len(self._dirs) > 100_000:
                self._dirs.clear()
            real = os.path.realpath(self.paths.local_path(directory)) if directory else self.paths.local
            real = real.rstrip(os.sep) + os.sep
            self._dirs[directory] = real
        return real + name

    def add(self, relative: str) -> str:
        key = self.local_key(relative)
        self.hashes.add(hash(key))
        return key

    def __contains__(self, local_path: str) -> bool:
        return hash(local_path) in self.hashes


def _claiming_filter(now: dt.datetime) -> dict[str, Any]:
    # Every record except those whose expires_at is a date at or before now: null, missing, later
    # dates and legacy strings in any spelling (sorted out below) all keep their file. Served by
    # the expires_at index (the complement of one range).
    return {"expires_at": {"$not": {"$lte": now}}}


def _claims_file(record: Mapping[str, Any], now: dt.datetime, legacy: LegacyTime) -> bool:
    expires = record.get("expires_at")
    if not isinstance(expires, str):
        return True
    try:
        moment = legacy.parse(expires)
        return moment is None or moment + LEGACY_MARGIN > now
    except (ValueError, OverflowError):  # at the datetime limits: undecidable, so it claims
        return True


def _read_records(coll: Any, now: dt.datetime, legacy: LegacyTime) -> Iterator[Mapping[str, Any]]:
    projection = {"_id": 0, "file_id": 1, "user_id": 1, "file_path": 1, "expires_at": 1}
    for record in coll.find(_claiming_filter(now), projection, batch_size=10_000):
        if _claims_file(record, now, legacy):
            yield record


def _stamp(info: os.stat_result) -> float:
    # The later of mtime and ctime: a file renamed into place keeps an old mtime, but its ctime
    # says when it arrived.
    return max(info.st_mtime, info.st_ctime)


@dataclass
class _Frame:
    fd: int
    relative: str
    prefix: str  # the directory's local path and a separator: prefix + name is an entry's path
    stamp: float
    subdirs: list[tuple[str, float]]
    all_gone: bool = True


class _Walk:
    """One pass over the tree below the root, directory by directory through descriptors; the
    tree is never held in memory (one directory's subdirectory names per level at most)."""

    def __init__(
        self, paths: PathMap, claims: _Claims, cutoff: float, report: SweepReport | None,
        remove: bool, may_remove: int | None,
    ) -> None:  # fmt: skip
        self.paths = paths
        self.claims = claims
        self.cutoff = cutoff
        self.report = report  # None: a planning pass that only counts
        self.remove = remove
        self.may_remove = may_remove
        self.files = 0
        self.orphans = 0
        self.dirs = 0
        self.errors: list[str] = []

    def _error(self, relative: str, exc: OSError) -> None:
        where = self.paths.local_path(relative) if relative else self.paths.local
        self.errors.append(f"{where}: {exc.strerror}")

    def run(self) -> None:
        try:
            root_fd = os.open(self.paths.local, _ROOT_FLAGS)
        except OSError as exc:
            self._error("", exc)
            return
        stack = [_Frame(root_fd, "", self.paths.local.rstrip(os.sep) + os.sep, 0.0, [])]
        try:
            self._list(stack[0])
            while stack:
                frame = stack[-1]
                if frame.subdirs:
                    child = self._enter(frame, *frame.subdirs.pop(), depth=len(stack))
                    if child is not None:
                        stack.append(child)
                        self._list(child)
                    continue
                stack.pop()
                os.close(frame.fd)
                if stack:
                    self._leave(stack[-1], frame)
        finally:
            for frame in stack:
                os.close(frame.fd)

    def _enter(self, parent: _Frame, name: str, stamp: float, depth: int) -> _Frame | None:
        relative = os.path.join(parent.relative, name)
        if depth > MAX_DEPTH:
            parent.all_gone = False
            where = self.paths.local_path(relative)
            self.errors.append(f"{where}: deeper than {MAX_DEPTH} levels, not swept")
            return None
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None  # removed meanwhile
            parent.all_gone = False
            if exc.errno not in _NOT_A_DIRECTORY:  # not swapped for a link: a real problem
                self._error(relative, exc)
            return None
        return _Frame(fd, relative, parent.prefix + name + os.sep, stamp, [])

    def _list(self, frame: _Frame) -> None:
        try:
            with os.scandir(frame.fd) as entries:
                for entry in entries:
                    self._entry(frame, entry)
        except OSError as exc:
            frame.all_gone = False
            self._error(frame.relative, exc)

    def _entry(self, frame: _Frame, entry: os.DirEntry[str]) -> None:
        local = frame.prefix + entry.name
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            return  # gone since the listing
        except OSError as exc:
            frame.all_gone = False
            self.errors.append(f"{local}: {exc.strerror}")
            return
        if stat.S_ISDIR(info.st_mode):
            frame.subdirs.append((entry.name, _stamp(info)))
            return
        if not stat.S_ISREG(info.st_mode):
            frame.all_gone = False
            if self.report is not None:
                if stat.S_ISLNK(info.st_mode):
                    self.report.skipped_symlinks.append(local)
                else:
                    self.report.skipped_special += 1
            return
        self.files += 1
        if local in self.claims:
            frame.all_gone = False
            if self.report is not None:
                self.report.kept_live += 1
        elif _stamp(info) > self.cutoff:
            frame.all_gone = False
            if self.report is not None:
                self.report.kept_young += 1
        else:
            self.orphans += 1
            if self.report is not None and not self._remove_file(frame, entry.name, local):
                frame.all_gone = False

    def _remove_file(self, frame: _Frame, name: str, local: str) -> bool:
        assert self.report is not None
        if self.may_remove is not None and len(self.report.removed_files) >= self.may_remove:
            self.errors.append(f"{local}: not removed: the --max-remove limit was reached")
            return False
        if self.remove:
            try:
                os.unlink(name, dir_fd=frame.fd)  # never follows a link; stays in this directory
            except FileNotFoundError:
                return True
            except OSError as exc:
                self.errors.append(f"{local}: {exc.strerror}")
                return False
        self.report.removed_files.append(local)
        return True

    def _leave(self, parent: _Frame, child: _Frame) -> None:
        name = os.path.basename(child.relative)
        if not child.all_gone or child.stamp > self.cutoff:
            parent.all_gone = False
            return
        self.dirs += 1
        if self.report is None:
            return
        if self.remove:
            try:
                os.rmdir(name, dir_fd=parent.fd)  # fails, harmlessly, if something arrived meanwhile
            except FileNotFoundError:
                return
            except OSError:
                parent.all_gone = False
                return
        self.report.removed_dirs.append(self.paths.local_path(child.relative))


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
    records_root: str | Path | None = None,
    max_remove: str | int | RemoveLimit = DEFAULT_MAX_REMOVE,
) -> SweepReport:
    """Bring the storage root in step with the live records.

    - Removes regular files under ``root`` that no live record points to (TTL-deleted, evicted,
      left by a failed upload) once older than ``grace_seconds`` by the later of their mtime and
      ctime: the bot writes a file before its record, so a young file may be an upload in flight.
      The records are read twice, before and after a first (counting) walk, and a file is only
      removed if neither read claims it. A record whose legacy string expiry cannot be decided
      for certain keeps its file.
    - ``records_root``: the directory the records' paths start with, when it differs from
      ``root`` (the bot's container path, with the volume mounted at ``root`` here).
    - Reports live records whose file does not exist; deletes those records when
      ``remove_missing_records``. A file that exists but cannot be checked (permission) is an
      error, never "missing". Records pointing outside the root are reported, never touched.
    - Removes empty directories below the root (older than the grace period).
    - Never follows a symlink and never touches anything outside the root, even while another
      process swaps directories for symlinks: see the module docstring.

    Refuses, removing nothing (``SweepRefused``), what looks like a wrong database or root: the
    collection does not exist; live records exist but none points inside the root; it would
    remove more files (or records) than ``max_remove`` allows (a count, or a share of the files
    under the root / of the live records inside it).

    Raises ``ConfigurationError`` for a root that is not a directory or bad options; database
    errors propagate. Files vanishing during the walk are fine; unreadable directories are
    listed in ``errors`` and the rest is swept.
    """
    if not grace_seconds >= 0 or not math.isfinite(grace_seconds):
        raise ConfigurationError(f"grace must be at least 0 seconds, got {grace_seconds}")
    limit = RemoveLimit.parse(max_remove)
    paths = PathMap.make(root, records_root)
    legacy = LegacyTime.named(legacy_timezone)
    report = SweepReport(root=paths.local, dry_run=dry_run, records_root=list(paths.records_roots))
    if collection not in database.list_collection_names(filter={"name": collection}):
        raise SweepRefused(
            f"refused: database {database.name!r} has no collection {collection!r}: is this the "
            "bot's database (chatgpt_discord_bot)? Nothing was removed."
        )
    coll = database[collection]
    now = read_clock(clock)
    cutoff = now.timestamp() - grace_seconds
    claims = _Claims(paths)

    live = inside_root = 0
    example: str | None = None
    for record in _read_records(coll, now, legacy):
        live += 1
        relative = paths.relative(record.get("file_path"))
        if relative is None:
            example = example or repr(record.get("file_path"))
            continue
        inside_root += 1
        claims.add(relative)
    if live and not inside_root:
        raise SweepRefused(
            f"refused: none of the {live} live record(s) points inside {' or '.join(paths.records_roots)} "
            f"(e.g. {example}): wrong root or wrong database? If the records were written under "
            "another path (the bot's container), pass it as --records-root. Nothing was removed."
        )

    plan = _Walk(paths, claims, cutoff, None, remove=False, may_remove=None)
    plan.run()

    # The second read: records saved during the walk claim their files too; and which live
    # records' files do not exist.
    live = 0
    missing: list[dict[str, Any]] = []
    local_prefix = paths.local.rstrip(os.sep) + os.sep
    for record in _read_records(coll, read_clock(clock), legacy):
        live += 1
        relative = paths.relative(record.get("file_path"))
        if relative is None:
            report.outside_root.append(_summary(record))
            continue
        key = claims.add(relative)
        if not key.startswith(local_prefix):  # through a symlinked directory to the outside
            report.outside_root.append(_summary(record))
            continue
        try:
            os.lstat(key)
        except FileNotFoundError:
            missing.append(_summary(record))
        except (OSError, ValueError) as exc:  # exists or may: permission, a file as a directory, ...
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            file_id = record.get("file_id")
            report.errors.append(f"{key}: cannot check the file of record {file_id!r}: {reason}")
    report.live_records = live
    inside_now = live - len(report.outside_root)

    allowed = limit.allowed(plan.files)
    if plan.orphans > allowed:
        raise SweepRefused(
            f"refused: would remove {plan.orphans} of the {plan.files} files under {paths.local}, "
            f"more than --max-remove {limit} allows ({allowed}): wrong database or root? Check, "
            "then rerun with a higher --max-remove (e.g. 100%). Nothing was removed."
        )
    if remove_missing_records and len(missing) > limit.allowed(inside_now):
        raise SweepRefused(
            f"refused: would delete {len(missing)} of the {inside_now} live records under the root "
            f"whose file does not exist, more than --max-remove {limit} allows "
            f"({limit.allowed(inside_now)}): is the volume mounted at {paths.local}? Nothing was removed."
        )

    # Files that turned into orphans since the planning pass count against the same limit.
    cap = None if limit.percent is not None and limit.percent >= 100 else allowed
    walk = _Walk(paths, claims, cutoff, report, remove=not dry_run, may_remove=cap)
    walk.run()
    report.files_seen = walk.files
    report.errors.extend(walk.errors)
    report.missing_files = missing
    if remove_missing_records and not dry_run:
        for summary in missing:
            # Only this record as it was read: one re-saved meanwhile with a new path stays.
            result = coll.delete_one({"file_id": summary["file_id"], "file_path": summary["file_path"]})
            report.removed_records += result.deleted_count
    return report


__all__ = [
    "DEFAULT_GRACE_SECONDS",
    "DEFAULT_MAX_REMOVE",
    "PathMap",
    "RemoveLimit",
    "SweepRefused",
    "SweepReport",
    "inside",
    "remove_record_files",
    "storage_root",
    "sweep",
]
