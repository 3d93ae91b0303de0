"""The migration engine's errors. Each carries the exit code ``migrate.py`` documents."""

from __future__ import annotations

from userfiles_db.errors import UserFilesError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_PENDING = 3
EXIT_INVALID = 4
EXIT_LOCK_TIMEOUT = 5
EXIT_NEEDS_ATTENTION = 6  # an earlier run left a migration that cannot be resumed on its own
EXIT_TERMINATED = 7  # stopped by SIGTERM/SIGINT at a safe point; the lock was released


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


class LockHeld(MigrationError):
    """``unlock`` found a live lease (still being renewed) and was not forced (exit code 5)."""

    exit_code = EXIT_LOCK_TIMEOUT


class LockLost(MigrationError):
    """This runner no longer holds the lease (it expired while the process was paused, or it
    was force-released): it stopped before writing anything more (exit code 1)."""


class InterruptedMigration(MigrationError):
    """A migration was left ``applying``, ``reverting`` or ``failed`` by an earlier run and cannot
    be resumed automatically: a person must look (exit code 6)."""

    exit_code = EXIT_NEEDS_ATTENTION


class Terminated(MigrationError):
    """The run was asked to stop (SIGTERM, SIGINT) and stopped at a safe point (exit code 7)."""

    exit_code = EXIT_TERMINATED


class StopRequested(BaseException):
    """Raised inside an interruptible section by the SIGTERM handler; becomes ``Terminated``."""


class IrreversibleMigration(MigrationError):
    """``down`` reached a migration that cannot be undone, without ``force``."""


class DryRunWrite(MigrationError):
    """No longer raised: a dry run now reports a migration's own writes as "would run custom
    code" instead of refusing them. Kept so that code importing it from 0.1.0 still imports."""


class SchemaStepConflict(MigrationError):
    """A schema step met a state it must not change on its own (server codes 85/86 and the like)."""
