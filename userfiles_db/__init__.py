"""userfiles_db: TTL-native MongoDB schema, migrations and queries for per-user file records."""

from __future__ import annotations

from userfiles_db.errors import (
    ConfigurationError,
    DatabaseUnavailable,
    FileIdConflict,
    InvalidFileData,
    SaveIncomplete,
    SchemaError,
    UserFilesError,
)
from userfiles_db.schema import CollectionSchema, IndexSpec, load_schema
from userfiles_db.store import AsyncUserFiles, UserFiles

__all__ = [
    "AsyncUserFiles",
    "CollectionSchema",
    "ConfigurationError",
    "DatabaseUnavailable",
    "FileIdConflict",
    "IndexSpec",
    "InvalidFileData",
    "SaveIncomplete",
    "SchemaError",
    "UserFiles",
    "UserFilesError",
    "load_schema",
]
__version__ = "0.2.0.dev0"
