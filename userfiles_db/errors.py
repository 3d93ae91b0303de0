"""The package's exceptions: one base class, narrow subclasses.

A database that cannot be reached in time raises ``DatabaseUnavailable``; other database errors
propagate as PyMongo's own exceptions.
"""

from __future__ import annotations

from typing import Any


class UserFilesError(Exception):
    """Base class of every error this package raises on its own."""


class ConfigurationError(UserFilesError, ValueError):
    """A setting (argument or environment variable) has an invalid value, or the collection is
    not set up as the store needs (for example the unique index on ``file_id`` is missing)."""


class InvalidFileData(UserFilesError, ValueError):
    """A file record given to ``save_user_file`` is malformed; nothing was written."""


class FileIdConflict(InvalidFileData):
    """The ``file_id`` already belongs to another user; the existing record was left untouched."""


class SchemaError(UserFilesError):
    """A declared schema file is missing or malformed (a configuration error: exit 2)."""

    exit_code = 2


class DatabaseUnavailable(UserFilesError):
    """The database did not answer within the store's time bound (``timeout_seconds``), or could
    not be reached at all. The message names the operation and the bound; the driver's error is
    the ``__cause__``. For a save, the write may or may not have been applied."""


class SaveIncomplete(UserFilesError):
    """The record was saved, but evicting records over the limit was interrupted (connection
    lost, time bound reached, asyncio task cancelled).

    ``record`` is the saved record, ``evicted`` the records already evicted (their files are the
    caller's to remove, exactly as with a normal return), ``uncertain`` the records whose
    eviction was sent but not confirmed (each is either gone or still live: remove its file only
    if ``get_file`` no longer finds it; the sweep catches the rest). The interruption is the
    ``__cause__``.
    """

    def __init__(
        self,
        message: str,
        record: dict[str, Any],
        evicted: list[dict[str, Any]],
        uncertain: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.record = record
        self.evicted = evicted
        self.uncertain = uncertain or []
