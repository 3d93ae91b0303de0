"""The migration engine: a library (no CLI inside). ``migrate.py`` is a thin layer over it.

A migration is a module ``migrations/NNNN_slug.py`` with a docstring, ``up(db)`` and ``down(db)``;
it calls the ``steps`` and reads the run through ``context()``.
"""

from __future__ import annotations

from userfiles_db.migrate import steps
from userfiles_db.migrate.context import RunContext, context, current_session
from userfiles_db.migrate.discovery import Migration, checksum, discover, new_migration
from userfiles_db.migrate.drift import Difference, drift
from userfiles_db.migrate.engine import (
    BASE,
    EngineOptions,
    Entry,
    Runner,
    RunResult,
    Status,
    history,
    lock_holder,
    resumable,
    status,
    unlock,
)
from userfiles_db.migrate.errors import (
    ConfigError,
    DryRunWrite,
    InterruptedMigration,
    InvalidHistory,
    IrreversibleMigration,
    LockHeld,
    LockLost,
    LockTimeout,
    MigrationError,
    SchemaStepConflict,
    Terminated,
)

__all__ = [
    "BASE",
    "ConfigError",
    "Difference",
    "DryRunWrite",
    "EngineOptions",
    "Entry",
    "InterruptedMigration",
    "InvalidHistory",
    "IrreversibleMigration",
    "LockHeld",
    "LockLost",
    "LockTimeout",
    "Migration",
    "MigrationError",
    "RunContext",
    "RunResult",
    "Runner",
    "SchemaStepConflict",
    "Status",
    "Terminated",
    "checksum",
    "context",
    "current_session",
    "discover",
    "drift",
    "history",
    "lock_holder",
    "new_migration",
    "resumable",
    "status",
    "steps",
    "unlock",
]
