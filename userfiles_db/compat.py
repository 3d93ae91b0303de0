"""``UserFilesMixin``: the seed document's four methods for the bot's database handler.

The bot's ``DatabaseHandler`` keeps its async database in ``self.db`` (Motor or
``pymongo.AsyncMongoClient``). Mixed in, this class gives it the seed's methods with the seed's
signatures and error behaviour (log the error, return ``[]``, ``None``, ``False`` or ``0``), plus
what the bot's commands need, all backed by ``AsyncUserFiles``. Files of evicted and deleted
records are removed from disk, inside ``user_files_root`` only.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from userfiles_db.disk import remove_record_files
from userfiles_db.store import AsyncUserFiles

logger = logging.getLogger("userfiles_db.compat")

DEFAULT_ROOT = "/tmp/bot_code_interpreter/user_files"


class UserFilesMixin:
    """Mix into the bot's database handler (which sets ``self.db``).

    Class attributes a handler may override: ``user_files_root`` (the storage root whose files may
    be removed; ``None`` never removes files), ``user_files_collection``, and
    ``user_files_options`` (keyword arguments for ``AsyncUserFiles``: ``expiration_hours``,
    ``max_files_per_user``, ``clock``, ``legacy_timezone``; the env vars apply otherwise).
    """

    db: Any
    user_files_root: str | Path | None = DEFAULT_ROOT
    user_files_collection: str = "user_files"
    user_files_options: dict[str, Any] = {}  # noqa: RUF012 - read-only default

    @property
    def user_files(self) -> AsyncUserFiles:
        """The handler's ``AsyncUserFiles`` (built on first use)."""
        store: AsyncUserFiles | None = self.__dict__.get("_user_files_store")
        if store is None:
            store = AsyncUserFiles(self.db, collection=self.user_files_collection, **self.user_files_options)
            self.__dict__["_user_files_store"] = store
        return store

    def _remove_files(self, records: list[dict[str, Any]]) -> None:
        if self.user_files_root is not None and records:
            try:
                remove_record_files(self.user_files_root, records)
            except Exception:
                logger.exception("removing files of %d deleted record(s) failed", len(records))

    # The seed document's four methods: exact signatures, errors logged, empty values returned.

    async def get_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """Live records of the user, newest first; ``[]`` on error."""
        try:
            return await self.user_files.get_user_files(user_id)
        except Exception:
            logger.exception("get_user_files(%r) failed", user_id)
            return []

    async def save_user_file(self, file_data: dict[str, Any]) -> None:
        """Upsert the record (the bot's writer dict or the seed's shape); evicted records' files
        are removed. Errors are logged."""
        try:
            evicted = await self.user_files.save_user_file(file_data)
        except Exception:
            logger.exception(
                "save_user_file(%r) failed", file_data.get("file_id") if isinstance(file_data, dict) else None
            )
            return
        self._remove_files(evicted)

    async def delete_user_file(self, file_id: str) -> bool:
        """Delete the record ``file_id`` and then its file; ``False`` if none or on error."""
        try:
            record = await self.user_files.take_file(file_id)
        except Exception:
            logger.exception("delete_user_file(%r) failed", file_id)
            return False
        if record is None:
            return False
        self._remove_files([record])
        return True

    async def delete_expired_files(self) -> int:
        """Delete records past expiry (the TTL index does it too); ``0`` on error. Their files are
        left to the sweep, which also catches the ones the TTL monitor deleted."""
        try:
            return await self.user_files.delete_expired_files()
        except Exception:
            logger.exception("delete_expired_files() failed")
            return 0

    # What the bot's commands need.

    async def get_user_file(self, file_id: str, user_id: int) -> dict[str, Any] | None:
        """The user's own live record ``file_id`` (code-interpreter file access); ``None`` if
        absent, expired, another user's, or on error."""
        try:
            return await self.user_files.get_file(file_id, user_id=user_id)
        except Exception:
            logger.exception("get_user_file(%r, %r) failed", file_id, user_id)
            return None

    async def list_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """``/files``: the user's live records, newest first; ``[]`` on error."""
        return await self.get_user_files(user_id)

    async def delete_user_file_for(self, user_id: int, file_id: str) -> bool:
        """``/files`` delete button: the user's own record, then its file; ``False`` if it is
        not theirs, absent, or on error."""
        try:
            record = await self.user_files.take_file(file_id, user_id=user_id)
        except Exception:
            logger.exception("delete_user_file_for(%r, %r) failed", user_id, file_id)
            return False
        if record is None:
            return False
        self._remove_files([record])
        return True

    async def reset_user_files(self, user_id: int) -> int:
        """``/reset``: delete all the user's records, then their files; how many (``0`` on error)."""
        try:
            records = await self.user_files.delete_all_user_files(user_id)
        except Exception:
            logger.exception("reset_user_files(%r) failed", user_id)
            return 0
        self._remove_files(records)
        return len(records)
