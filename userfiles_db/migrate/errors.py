"""The migration engine's errors. Each carries the exit code ``migrate.py`` documents."""

from __future__ import annotations

from userfiles_db.errors import UserFilesError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_INVALID = 4
EXIT_LOCK_TIMEOUT = 5


class MigrationError(UserFilesError):
    """Base class: a migration command could not do its work (exit code 1)."""

    exit_code = EXIT_ERROR


class ConfigError(MigrationError):
    """A bad option, config file or migrations directory (exit code 2)."""

    exit_code = EXIT_USAGE


class InvalidHistory(MigrationError):
    """An applied migration's file was edited, or an older migration is pending (exit code 4)."""

    exit_code = EXIT_INVALID


class LockTimeout(MigrationError):
    """Another runner held the migration lock for longer than the wait allowed (exit code 5)."""

    exit_code = EXIT_LOCK_TIMEOUT


class LockLost(MigrationError):
    """The lease expired while this runner held it (another runner may have taken over)."""


class InterruptedMigration(MigrationError):
    """A migration was left ``applying`` or ``failed`` by an earlier run."""


class IrreversibleMigration(MigrationError):
    """``down`` reached a migration that cannot be undone, without ``force``."""


class DryRunWrite(MigrationError):
    """A migration wrote to the database directly during a dry run (only steps can be previewed)."""


class SchemaStepConflict(MigrationError):
    """A schema step met a state it must not change on its own (server codes 85/86 and the like)."""
