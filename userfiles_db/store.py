"""``UserFiles`` (sync) and ``AsyncUserFiles``: the query module the bot imports.

Both are thin: the operations are written once in ``ops.FileOps`` as I/O-free plans; ``UserFiles``
runs them with ``run_sync`` on a PyMongo database, ``AsyncUserFiles`` with ``run_async`` on a
``pymongo.AsyncMongoClient`` (or Motor) database. Same rules, same errors, same results, the same
time bound on every call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from userfiles_db.clock import Clock, utc_now
from userfiles_db.config import resolve_settings
from userfiles_db.errors import ConfigurationError
from userfiles_db.ops import FileOps, Plan, T, run_async, run_sync
from userfiles_db.records import LegacyTime
from userfiles_db.schema import load_schema


class _Store:
    def __init__(
        self,
        database: Any,
        *,
        collection: str = "user_files",
        expiration_hours: float | None = None,
        max_files_per_user: int | None = None,
        clock: Clock | None = None,
        legacy_timezone: str | None = "UTC",
        max_generated_files_per_user: int | None = None,
        timeout_seconds: float | None = None,
        write_shape: str | None = None,
    ) -> None:
        settings = resolve_settings(
            expiration_hours,
            max_files_per_user,
            max_generated_files_per_user=max_generated_files_per_user,
            timeout_seconds=timeout_seconds,
            write_shape=write_shape,
        )
        legacy = LegacyTime.named(legacy_timezone)
        if settings.write_shape == "legacy" and not legacy.in_queries:
            raise ConfigurationError(
                "write_shape: 'legacy' writes legacy records, so legacy_timezone cannot be None "
                "(None says no legacy record is left); give the zone, e.g. 'UTC'"
            )
        if clock is not None and not callable(clock):
            raise ConfigurationError(f"clock: must be a callable returning an aware datetime, got {clock!r}")
        self.collection = database[collection]
        self._ops = FileOps(settings, load_schema(), clock or utc_now, legacy)

    @property
    def expiration_hours(self) -> float | None:
        """Hours until a new file expires; ``None`` when files never expire."""
        return self._ops.settings.expiration_hours

    @property
    def max_files_per_user(self) -> int:
        """The per-user limit of uploads."""
        return self._ops.settings.max_files_per_user

    @property
    def max_generated_files_per_user(self) -> int:
        """The per-user limit of generated files (``origin: "generated"``)."""
        return self._ops.settings.limit_for("generated")

    @property
    def timeout_seconds(self) -> float:
        """The time bound of every call."""
        return self._ops.settings.timeout_seconds

    @property
    def write_shape(self) -> str:
        """ "canonical" or "legacy": the shape new records are stored in."""
        return self._ops.settings.write_shape


class UserFiles(_Store):
    """Per-user file records in ``database[collection]`` (a PyMongo or mongomock ``Database``):
    reads never return an expired record, saves hold the per-user limit per origin.

    Settings (argument, else environment variable, else default; an invalid value raises
    ``ConfigurationError`` here, never on each call): ``expiration_hours``
    (``FILE_EXPIRATION_HOURS``, 48; -1 = never expire), ``max_files_per_user``
    (``MAX_FILES_PER_USER``, 20) for uploads, ``max_generated_files_per_user``
    (``MAX_GENERATED_FILES_PER_USER``, same as uploads) for ``origin: "generated"`` records,
    ``timeout_seconds`` (``USERFILES_TIMEOUT_SECONDS``, 5) the bound of every call, ``write_shape``
    (``USERFILES_WRITE_SHAPE``, "canonical"; "legacy" stores the old bot's shape).
    ``clock`` returns the current time as an aware datetime. ``legacy_timezone`` is the zone of
    naive ISO strings stored in the collection (default UTC); ``None`` once the migrations
    converted them all: queries then skip their string branch.

    Every call raises ``DatabaseUnavailable`` when the database does not answer within
    ``timeout_seconds``; other database errors propagate as PyMongo's exceptions.
    """

    def _run(self, name: str, plan: Plan[T]) -> T:
        return run_sync(self.collection, plan, operation=name, timeout=self._ops.settings.timeout_seconds)

    def get_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """The user's live records, newest first (one round trip)."""
        return self._run("get_user_files", self._ops.get_user_files(user_id))

    def get_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        """The live record ``file_id``, or ``None``; only the owner's when ``user_id`` is given."""
        return self._run("get_file", self._ops.get_file(file_id, user_id))

    def claimed_paths(self, user_id: int, paths: Iterable[str]) -> set[str]:
        """Which of ``paths`` a live record of ``user_id`` still has as its ``file_path`` (one round
        trip; none for no paths). A file is safe to remove only when it is not in this set."""
        return self._run("claimed_paths", self._ops.claimed_paths(user_id, paths))

    def save_user_file(self, file_data: dict[str, Any]) -> list[dict[str, Any]]:
        """Insert or update the record of ``file_data["file_id"]``; return the records evicted to
        keep the user within the limit of the record's origin, so the caller can remove their
        files. The user keeps the newest ``limit`` records by creation time, then ``file_id``; the
        record just saved is evicted (and returned) itself when it is not among them.

        Raises ``InvalidFileData`` (nothing written) when ``file_data`` is malformed, and its
        subclass ``FileIdConflict`` when the file_id belongs to another user;
        ``ConfigurationError`` when the collection lacks the unique index on file_id;
        ``SaveIncomplete`` when the record was saved but the eviction was interrupted.
        """
        return self._run("save_user_file", self._ops.save_user_file(file_data))

    def delete_user_file(self, file_id: str, user_id: int | None = None) -> bool:
        """Delete the record ``file_id`` (only the owner's when ``user_id`` is given); True if
        a record was deleted."""
        return self._run("delete_user_file", self._ops.delete_user_file(file_id, user_id))

    def take_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        """Delete the record ``file_id`` (only the owner's when ``user_id`` is given) and return
        it, expired or not (its path is what the caller removes from disk); ``None`` if absent."""
        return self._run("take_file", self._ops.take_file(file_id, user_id))

    def delete_all_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """Delete every record of the user, expired ones included; return them (their paths are
        what the caller removes from disk)."""
        return self._run("delete_all_user_files", self._ops.delete_all_user_files(user_id))

    def delete_expired_files(self) -> int:
        """Delete the records surely past expiry (a fallback: the TTL index does this on the
        server); return how many. A legacy string whose time is ambiguous or unreadable stays."""
        return self._run("delete_expired_files", self._ops.delete_expired_files())


class AsyncUserFiles(_Store):
    """``UserFiles`` for asyncio: the same constructor and operations, awaitable, over a
    ``pymongo.AsyncMongoClient`` database or a Motor database. See ``UserFiles`` for each one.
    A cancelled ``save_user_file`` whose record was written raises ``SaveIncomplete``."""

    async def _run(self, name: str, plan: Plan[T]) -> T:
        return await run_async(
            self.collection, plan, operation=name, timeout=self._ops.settings.timeout_seconds
        )

    async def get_user_files(self, user_id: int) -> list[dict[str, Any]]:
        return await self._run("get_user_files", self._ops.get_user_files(user_id))

    async def get_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        return await self._run("get_file", self._ops.get_file(file_id, user_id))

    async def claimed_paths(self, user_id: int, paths: Iterable[str]) -> set[str]:
        return await self._run("claimed_paths", self._ops.claimed_paths(user_id, paths))

    async def save_user_file(self, file_data: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._run("save_user_file", self._ops.save_user_file(file_data))

    async def delete_user_file(self, file_id: str, user_id: int | None = None) -> bool:
        return await self._run("delete_user_file", self._ops.delete_user_file(file_id, user_id))

    async def take_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        return await self._run("take_file", self._ops.take_file(file_id, user_id))

    async def delete_all_user_files(self, user_id: int) -> list[dict[str, Any]]:
        return await self._run("delete_all_user_files", self._ops.delete_all_user_files(user_id))

    async def delete_expired_files(self) -> int:
        return await self._run("delete_expired_files", self._ops.delete_expired_files())
