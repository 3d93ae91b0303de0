"""The package's exceptions: one base class, narrow subclasses.

Database errors are not wrapped: they propagate as PyMongo's own exceptions.
"""

from __future__ import annotations


class UserFilesError(Exception):
    """Base class of every error this package raises on its own."""


class ConfigurationError(UserFilesError, ValueError):
    """A setting (argument or environment variable) has an invalid value."""


class InvalidFileData(UserFilesError, ValueError):
    """A file record given to ``save_user_file`` is malformed; nothing was written."""


class FileIdConflict(InvalidFileData):
    """The ``file_id`` already belongs to another user; the existing record was left untouched."""


class SchemaError(UserFilesError):
    """A declared schema file is missing or malformed."""
