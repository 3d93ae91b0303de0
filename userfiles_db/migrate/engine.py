"""The migration engine: status, up (and its dry run, the plan), down, stamp, unlock.

Every function takes the database and the discovered migrations and returns data; nothing here
prints or exits (``migrate.py`` does). Writes happen only under the lease lock.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import PyMongoError

from userfiles_db.clock import Clock, read_clock, utc_now
from userfiles_db.migrate import changelog as log
from userfiles_db.migrate.context import Progress, Reporter, RunContext, running
from userfiles_db.migrate.discovery import Migration
from userfiles_db.migrate.errors import (
    ConfigError,
    InterruptedMigration,
    InvalidHistory,
    IrreversibleMigration,
    LockLost,
    MigrationError,
)
from userfiles_db.migrate.lock import LeaseLock, force_unlock, read_lock
from userfiles_db.migrate.steps import ReadOnlyDatabase

BASE = "base"
TRANSACTION_MODES = ("auto", "never", "always")


def _ignore(*_args: object) -> None:
    return None


@dataclass(frozen=True)
class EngineOptions:
    """The engine's settings (``migrate.yaml`` sets them; see the README)."""

    changelog_collection: str = "migrations_changelog"
    lock_collection: str = "migrations_lock"
    lock_lease_seconds: float = 60.0
    lock_timeout_seconds: float = 120.0
    lock_poll_seconds: float = 0.5
    transactions: str = "auto"
    migration_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transactions not in TRANSACTION_MODES:
            raise ConfigError(f"transactions must be one of {TRANSACTION_MODES}, got {self.transactions!r}")
        for name in ("lock_lease_seconds", "lock_timeout_seconds", "lock_poll_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True)
class Entry:
    """One migration's status: from its file, its changelog record, or both."""

    id: str
    state: str  # pending | applying | failed | applied
    title: str | None = None
    checksum: str | None = None  # of the file now (None: the file is gone)
    recorded_checksum: str | None = None
    applied_at: dt.datetime | None = None
    record: dict[str, Any] | None = None
    out_of_order: bool = False

    @property
    def changed(self) -> bool:
        return (
            self.state == log.APPLIED
            and self.checksum is not None
            and self.recorded_checksum != self.checksum
        )

    @property
    def missing_file(self) -> bool:
        return self.checksum is None


@dataclass(frozen=True)
class Status:
    entries: list[Entry]

    def _with(self, state: str) -> list[Entry]:
        return [e for e in self.entries if e.state == state]

    @property
    def applied(self) -> list[Entry]:
        return self._with(log.APPLIED)

    @property
    def pending(self) -> list[Entry]:
        return self._with("pending")

    @property
    def interrupted(self) -> list[Entry]:
        return [e for e in self.entries if e.state in (log.APPLYING, log.FAILED)]

    @property
    def changed(self) -> list[Entry]:
        return [e for e in self.entries if e.changed]

    @property
    def out_of_order(self) -> list[Entry]:
        return [e for e in self.entries if e.out_of_order]

    @property
    def current(self) -> str | None:
        """The newest applied migration's id."""
        return self.applied[-1].id if self.applied else None

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of ``status --json``."""

        def when(value: dt.datetime | None) -> str | None:
            return value.isoformat() if value else None

        return {
            "current": self.current,
            "applied": [
                {
                    "id": e.id,
                    "applied_at": when(e.applied_at),
                    "checksum": e.recorded_checksum,
                    "changed": e.changed,
                    "missing_file": e.missing_file,
                    "stamped": bool((e.record or {}).get("stamped")),
                }
                for e in self.applied
            ],
            "pending": [{"id": e.id, "title": e.title, "out_of_order": e.out_of_order} for e in self.pending],
            "interrupted": [
                {
                    "id": e.id,
                    "state": e.state,
                    "started_at": when((e.record or {}).get("started_at")),
                    "host": (e.record or {}).get("host"),
                    "run_id": (e.record or {}).get("run_id"),
                    "error": (e.record or {}).get("error"),
                }
                for e in self.interrupted
            ],
        }


def status(db: Database[Any], migrations: Sequence[Migration], options: EngineOptions) -> Status:
    """Each migration's state. Read-only: creates no collection, index or lock."""
    records = log.Changelog(db, options.changelog_collection).records()
    by_id = {m.id: m for m in migrations}
    newest_applied = max((i for i, r in records.items() if r.get("state") == log.APPLIED), default="")
    entries = []
    for migration_id in sorted(set(by_id) | set(records)):
        migration = by_id.get(migration_id)
        record = records.get(migration_id)
        state = str(record.get("state", log.APPLIED)) if record else "pending"
        entries.append(
            Entry(
                id=migration_id,
                state=state,
                title=migration.title if migration else None,
                checksum=migration.checksum if migration else None,
                recorded_checksum=record.get("checksum") if record else None,
                applied_at=record.get("applied_at") if record else None,
                record=record,
                out_of_order=state == "pending" and migration_id < newest_applied,
            )
        )
    return Status(entries)


def _check_history(found: Status, *, allow_changed: bool, allow_out_of_order: bool, resume: bool) -> None:
    if found.interrupted and not resume:
        lines = []
        for e in found.interrupted:
            record = e.record or {}
            lines.append(
                f"  {e.id}: {e.state} since {record.get('started_at')} on host "
                f"{record.get('host')} (run {record.get('run_id')})"
                + (f": {record['error']}" if record.get("error") else "")
            )
        raise InterruptedMigration(
            "an earlier run did not finish:\n" + "\n".join(lines) + "\n"
            "Its changes may be partial. Check the data, then either run `up --resume` to run it "
            "again (the bundled migrations are idempotent and resumable), or `stamp ID` if it is "
            "complete."
        )
    missing = [e.id for e in found.applied if e.missing_file]
    if missing:
        raise InvalidHistory(
            f"applied migration(s) {missing} have no file in the migrations directory; "
            "is --migrations pointing at the right place?"
        )
    if found.changed and not allow_changed:
        names = ", ".join(f"{e.id}.py" for e in found.changed)
        raise InvalidHistory(
            f"applied migration file(s) changed since they ran: {names}. Applied migrations are "
            "immutable: restore the file, or write a new migration. If the edit is harmless "
            "(a comment), `up --accept-changed` records the new checksum."
        )
    if found.out_of_order and not allow_out_of_order:
        names = ", ".join(e.id for e in found.out_of_order)
        raise InvalidHistory(
            f"pending migration(s) older than the newest applied one ({found.current}): {names} "
            "(merged from another branch?). They are not skipped: check they are safe to run "
            "after the newer ones, then pass `up --allow-out-of-order`."
        )


def _target_index(migrations: Sequence[Migration], target: str | None) -> int:
    """Index in ``migrations`` of the last one to keep applied (-1 for base)."""
    if target is None:
        return len(migrations) - 1
    if target == BASE:
        return -1
    for i, migration in enumerate(migrations):
        if migration.id == target:
            return i
    raise ConfigError(f"no migration {target!r}; known: {[m.id for m in migrations]}")


@dataclass
class RunResult:
    """What ``up`` / ``down`` did, or (dry run) would do."""

    run_id: str
    done: list[str] = field(default_factory=list)
    planned: dict[str, list[str]] = field(default_factory=dict)
    accepted_checksums: list[str] = field(default_factory=list)


class Runner:
    """One run of the engine against one database."""

    def __init__(
        self,
        db: Database[Any],
        migrations: Sequence[Migration],
        options: EngineOptions | None = None,
        *,
        report: Reporter = _ignore,
        progress: Progress = _ignore,
        clock: Clock = utc_now,
    ) -> None:
        self.db = db
        self.migrations = list(migrations)
        self.options = options or EngineOptions()
        self.report = report
        self.progress = progress
        self.clock = clock
        self.run_id = uuid.uuid4().hex[:12]
        self.host = f"{socket.gethostname()}:{os.getpid()}"
        self.changelog = log.Changelog(db, self.options.changelog_collection)
        self._lock: LeaseLock | None = None

    @property
    def _run_fields(self) -> dict[str, Any]:
        return {"host": self.host, "run_id": self.run_id}

    def _context(self, **overrides: Any) -> RunContext:
        return RunContext(
            options=self.options.migration_options,
            report=self.report,
            progress=self.progress,
            **overrides,
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        lock = LeaseLock(
            self.db,
            collection=self.options.lock_collection,
            owner=self.run_id,
            host=self.host,
            lease_seconds=self.options.lock_lease_seconds,
        )
        lock.acquire(self.options.lock_timeout_seconds, self.options.lock_poll_seconds, self.report)
        self._lock = lock
        try:
            yield
        finally:
            self._lock = None
            lock.release()

    def _check_lock(self) -> None:
        if self._lock is not None and self._lock.lost:
            raise LockLost(
                "the migration lock's lease expired while this run held it (was the process "
                "paused?); stopping before the next migration"
            )

    def _supports_transactions(self) -> bool:
        hello = self.db.client.admin.command("hello")
        return bool(hello.get("setName") or hello.get("msg") == "isdbgrid")

    @contextmanager
    def _transaction(self) -> Iterator[ClientSession]:
        """A session in a transaction, set as the run context's: commits on exit, aborts on error."""
        with (
            self.db.client.start_session() as session,
            session.start_transaction(),
            running(self._context(session=session)),
        ):
            yield session

    def _use_transaction(self, migration: Migration) -> bool:
        mode = self.options.transactions
        if not migration.transactional or mode == "never":
            return False
        if self._supports_transactions():
            return True
        if mode == "always":
            raise MigrationError(
                f"{migration.id} must run in a transaction (transactions: always), but the server "
                "is a standalone: transactions need a replica set or a sharded cluster"
            )
        self.report(f"  note: standalone server, {migration.id} runs without a transaction")
        return False

    # -- up ------------------------------------------------------------------------------------

    def up(
        self,
        target: str | None = None,
        *,
        dry_run: bool = False,
        allow_changed: bool = False,
        allow_out_of_order: bool = False,
        resume: bool = False,
    ) -> RunResult:
        """Apply pending migrations up to ``target`` (default: all), each exactly once.

        Raises ``InvalidHistory`` (edited applied file, out-of-order pending migration),
        ``InterruptedMigration`` (an earlier run died or failed), ``LockTimeout``, or
        ``MigrationError`` when a migration fails (recorded ``failed``, never ``applied``).
        """
        last = _target_index(self.migrations, target)
        result = RunResult(self.run_id)
        if dry_run:
            # Read-only: no lock, no changelog; history is checked as a real run would.
            self._up_locked(last, result, True, allow_changed, allow_out_of_order, resume)
            return result
        with self.locked():
            self._up_locked(last, result, False, allow_changed, allow_out_of_order, resume)
        return result

    def _up_locked(
        self,
        last: int,
        result: RunResult,
        dry_run: bool,
        allow_changed: bool,
        allow_out_of_order: bool,
        resume: bool,
    ) -> None:
        found = status(self.db, self.migrations, self.options)
        _check_history(
            found, allow_changed=allow_changed, allow_out_of_order=allow_out_of_order, resume=resume
        )
        if allow_changed and not dry_run:
            for entry in found.changed:
                assert entry.checksum is not None
                self.changelog.accept_checksum(entry.id, entry.checksum, read_clock(self.clock))
                result.accepted_checksums.append(entry.id)
        states = {e.id: e.state for e in found.entries}
        todo = [m for m in self.migrations[: last + 1] if states.get(m.id) != log.APPLIED]
        # One read-only database for the whole dry run: each migration is previewed against
        # the state the earlier pending ones would leave (its plan overlays the live state).
        preview = ReadOnlyDatabase(self.db)
        for migration in todo:
            if dry_run:
                result.planned[migration.id] = self._plan_one(migration, preview)
            else:
                self._check_lock()
                self._apply_one(migration)
                result.done.append(migration.id)

    def _plan_one(self, migration: Migration, preview: ReadOnlyDatabase) -> list[str]:
        self.report(f"{migration.id}: {migration.title}")
        with running(self._context(dry_run=True)) as ctx:
            migration.up(preview)
        if not ctx.planned:
            self.report("  nothing to send")
        return ctx.planned

    def _apply_one(self, migration: Migration) -> None:
        self.report(f"{migration.id}: {migration.title}")
        started = read_clock(self.clock)
        if self._use_transaction(migration):
            try:
                with self._transaction() as session:
                    migration.up(self.db)
                    self.changelog.finish(
                        migration.id, migration.checksum, started, read_clock(self.clock),
                        self._run_fields, session=session,
                    )  # fmt: skip
            except Exception as exc:
                raise MigrationError(
                    f"{migration.id} failed and its transaction was rolled back (schema "
                    f"steps, which run outside it, stay): {type(exc).__name__}: {exc}"
                ) from exc
            self.report(f"  applied in a transaction ({self._elapsed(started)})")
            return
        self.changelog.start(migration.id, migration.checksum, started, self._run_fields)
        try:
            with running(self._context()):
                migration.up(self.db)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            # If even this fails, the record stays "applying", which blocks the next run the same.
            with suppress(PyMongoError):
                self.changelog.fail(migration.id, error, read_clock(self.clock))
            raise MigrationError(
                f"{migration.id} failed: {error}. It is recorded 'failed', not applied; its "
                "changes may be partial. Fix the cause, then `up --resume`."
            ) from exc
        self.changelog.finish(
            migration.id, migration.checksum, started, read_clock(self.clock), self._run_fields
        )
        self.report(f"  applied ({self._elapsed(started)})")

    def _elapsed(self, started: dt.datetime) -> str:
        return f"{(read_clock(self.clock) - started).total_seconds():.2f} s"

    # -- down ----------------------------------------------------------------------------------

    def down(self, target: str | None = None, *, steps: int | None = None, force: bool = False) -> RunResult:
        """Undo applied migrations, newest first: down to ``target`` (kept applied; ``"base"``
        undoes all), or the last ``steps`` (default 1). Refuses, before undoing anything, if one
        of them is irreversible and ``force`` is false."""
        if target is not None and steps is not None:
            raise ConfigError("give either a target or a number of steps, not both")
        if steps is not None and steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        result = RunResult(self.run_id)
        with self.locked():
            found = status(self.db, self.migrations, self.options)
            _check_history(found, allow_changed=True, allow_out_of_order=True, resume=False)
            applied = [e.id for e in found.applied]
            if target is not None:
                keep = _target_index(self.migrations, target)
                kept = {m.id for m in self.migrations[: keep + 1]}
                undo = [i for i in reversed(applied) if i not in kept]
            else:
                undo = list(reversed(applied))[: steps or 1]
            by_id = {m.id: m for m in self.migrations}
            blocked = [i for i in undo if not by_id[i].reversible]
            if blocked and not force:
                raise IrreversibleMigration(
                    f"{blocked[0]} cannot be undone (REVERSIBLE = False); nothing was undone. "
                    "`down --force` runs its down() anyway: read it first."
                )
            for migration_id in undo:
                self._check_lock()
                self._undo_one(by_id[migration_id])
                result.done.append(migration_id)
        return result

    def _undo_one(self, migration: Migration) -> None:
        self.report(f"undo {migration.id}: {migration.title}")
        if self._use_transaction(migration):
            with self._transaction() as session:
                migration.down(self.db)
                self.changelog.remove(migration.id, session=session)
            return
        with running(self._context()):
            migration.down(self.db)
        self.changelog.remove(migration.id)

    # -- stamp, unlock -------------------------------------------------------------------------

    def stamp(self, target: str) -> RunResult:
        """Record every migration up to ``target`` as applied without running it (a baseline
        for a database that already has their changes); later ones are left as they are."""
        last = _target_index(self.migrations, target)
        result = RunResult(self.run_id)
        with self.locked():
            found = {e.id: e for e in status(self.db, self.migrations, self.options).entries}
            for migration in self.migrations[: last + 1]:
                if found[migration.id].state == log.APPLIED:
                    continue
                now = read_clock(self.clock)
                self.changelog.finish(
                    migration.id, migration.checksum, now, now, self._run_fields, stamped=True
                )
                result.done.append(migration.id)
        return result


def unlock(db: Database[Any], options: EngineOptions) -> dict[str, Any] | None:
    """Force-release the migration lock; return the holder it had (``None`` if unlocked)."""
    return force_unlock(db, options.lock_collection)


def lock_holder(db: Database[Any], options: EngineOptions) -> dict[str, Any] | None:
    return read_lock(db, options.lock_collection)
