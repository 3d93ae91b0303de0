"""``UserFiles`` (sync) and ``AsyncUserFiles``: the query module the bot imports.

Both are thin: the operations are written once in ``ops.FileOps`` as I/O-free plans; ``UserFiles``
runs them with ``run_sync`` on a PyMongo database, ``AsyncUserFiles`` with ``run_async`` on a
``pymongo.AsyncMongoClient`` (or Motor) database. Same rules, same errors, same results.
"""

from __future__ import annotations

from typing import Any

from userfiles_db.clock import Clock, utc_now
from userfiles_db.config import resolve_settings
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
    ) -> None:
        settings = resolve_settings(expiration_hours, max_files_per_user)
        self.collection = database[collection]
        self._ops = FileOps(settings, load_schema(), clock or utc_now, LegacyTime.named(legacy_timezone))

    @property
    def expiration_hours(self) -> float | None:
        """Hours until a new file expires; ``None`` when files never expire."""
        return self._ops.settings.expiration_hours

    @property
    def max_files_per_user(self) -> int:
        return self._ops.settings.max_files_per_user


class UserFiles(_Store):
    """Per-user file records in ``database[collection]`` (a PyMongo or mongomock ``Database``):
    reads never return an expired record, saves hold the per-user limit.

    ``expiration_hours`` and ``max_files_per_user`` default to the environment variables
    ``FILE_EXPIRATION_HOURS`` (48; -1 = never expire) and ``MAX_FILES_PER_USER`` (20); an invalid
    value raises ``ConfigurationError``. ``clock`` returns the current time as an aware datetime.
    ``legacy_timezone`` is the zone of the bot's legacy naive ISO-string dates (default UTC);
    ``None`` once the migrations converted them all: queries then skip their string branch.
    Database errors propagate as PyMongo's exceptions.
    """

    def _run(self, plan: Plan[T]) -> T:
        return run_sync(self.collection, plan)

    def get_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """The user's live records, newest first (one round trip)."""
        return self._run(self._ops.get_user_files(user_id))

    def get_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        """The live record ``file_id``, or ``None``; only the owner's when ``user_id`` is given."""
        return self._run(self._ops.get_file(file_id, user_id))

    def save_user_file(self, file_data: dict[str, Any]) -> list[dict[str, Any]]:
        """Insert or update the record of ``file_data["file_id"]``; return the records evicted
        to keep the user within the limit (oldest first to go; never the one just saved), so the
        caller can remove their files.

        Raises ``InvalidFileData`` (nothing written) when ``file_data`` is malformed, and its
        subclass ``FileIdConflict`` when the file_id belongs to another user.
        """
        return self._run(self._ops.save_user_file(file_data))

    def delete_user_file(self, file_id: str, user_id: int | None = None) -> bool:
        """Delete the record ``file_id`` (only the owner's when ``user_id`` is given); True if
        a record was deleted."""
        return self._run(self._ops.delete_user_file(file_id, user_id))

    def take_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        """Delete the record ``file_id`` (only the owner's when ``user_id`` is given) and return
        it, expired or not (its path is what the caller removes from disk); ``None`` if absent."""
        return self._run(self._ops.take_file(file_id, user_id))

    def delete_all_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """Delete every record of the user, expired ones included; return them (their paths are
        what the caller removes from disk)."""
        return self._run(self._ops.delete_all_user_files(user_id))

    def delete_expired_files(self) -> int:
        """Delete the records already past expiry (a fallback: the TTL index does this on the
        server); return how many."""
        return self._run(self._ops.delete_expired_files())


class AsyncUserFiles(_Store):
    """``UserFiles`` for asyncio: the same constructor and operations, awaitable, over a
    ``pymongo.AsyncMongoClient`` database or a Motor database. See ``UserFiles`` for each one."""

    async def _run(self, plan: Plan[T]) -> T:
        return await run_async(self.collection, plan)

    async def get_user_files(self, user_id: int) -> list[dict[str, Any]]:
        return await self._run(self._ops.get_user_files(user_id))

    async def get_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        return await self._run(self._ops.get_file(file_id, user_id))

    async def save_user_file(self, file_data: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._run(self._ops.save_user_file(file_data))

    async def delete_user_file(self, file_id: str, user_id: int | None = None) -> bool:
        return await self._run(self._ops.delete_user_file(file_id, user_id))

    async def take_file(self, file_id: str, user_id: int | None = None) -> dict[str, Any] | None:
        return await self._run(self._ops.take_file(file_id, user_id))

    async def delete_all_user_files(self, user_id: int) -> list[dict[str, Any]]:
        return await self._run(self._ops.delete_all_user_files(user_id))

    async def delete_expired_files(self) -> int:
        return await self._run(self._ops.delete_expired_files())
