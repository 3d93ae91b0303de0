"""The migration engine: status, up (and its dry run, the plan), down, stamp, unlock, history.

Every function takes the database and the discovered migrations and returns data; nothing here
prints or exits (``migrate.py`` does). Writes happen only under the lease lock, and every
changelog write is fenced by it: the lease is checked on the server right before (in the same
transaction on replica sets), and the write itself only replaces the record it expects, so a
runner that lost the lock stops instead of overwriting another runner's work. The tool's reads
go to the primary with majority read concern and its writes use ``w: majority``, whatever the
URI says. Everything is appended to the history (``migrations_history``).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from pymongo.client_session import ClientSession
from pymongo.database import Database
from pymongo.errors import PyMongoError, WTimeoutError

from userfiles_db.clock import Clock, read_clock, utc_now
from userfiles_db.migrate import changelog as log
from userfiles_db.migrate import history as hist
from userfiles_db.migrate.context import Progress, Reporter, RunContext, running
from userfiles_db.migrate.discovery import Migration
from userfiles_db.migrate.errors import (
    EXIT_OK,
    EXIT_PENDING,
    ConfigError,
    InterruptedMigration,
    InvalidHistory,
    IrreversibleMigration,
    LockLost,
    MigrationError,
    StopRequested,
    Terminated,
)
from userfiles_db.migrate.lock import LeaseLock, read_lock, release_lock
from userfiles_db.migrate.retry import RetryTimeout, is_transient, retry_transient
from userfiles_db.migrate.steps import ReadOnlyDatabase

BASE = "base"
MANAGED_COLLECTION = "user_files"  # the collection the migrations manage: never the tool's own
TRANSACTION_MODES = ("auto", "never", "always")

# The bundled migrations are idempotent and resumable, but their files cannot say so: their
# checksums are recorded in users' databases, so the files never change. They are declared
# resumable here instead, by id *and* checksum (a project's own file that reuses an id does not
# inherit the declaration). A project's migration declares itself with ``RESUMABLE = True``.
BUNDLED_RESUMABLE: dict[str, str] = {
    "0001_create_user_files": "6166bccc2a9d7ef44d6f2ae03ec2206195b7eb3dd1c258d6f6be51915dae0719",
    "0002_adopt_legacy_records": "cc50b3a4624838692fa68d2a66afa7cc51ffd8540341fb43444b5c79c0840645",
    "0003_enable_ttl": "516cf05956b9a4bde20b58684b667868ac2881ec5925420b1c714a60b6fe14c9",
    "0004_enforce_validator": "a08183da718c131a902dae21a326a18b1a66945006d3e483ec9b268b99cf621d",
}


def resumable(migration: Migration) -> bool:
    """Whether running ``migration`` again after an interruption is safe (it is idempotent):
    ``RESUMABLE = True`` in its file, or a bundled migration (``BUNDLED_RESUMABLE``)."""
    declared = getattr(migration.module, "RESUMABLE", None)
    if declared is not None:
        return bool(declared)
    return BUNDLED_RESUMABLE.get(migration.id) == migration.checksum


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
    history_collection: str = hist.DEFAULT_COLLECTION
    # How long the tool retries its own reads and writes through a failover or a blip, and how
    # long one w: majority write waits for the majority: bounded, never forever.
    retry_seconds: float = 30.0
    majority_timeout_seconds: float = log.DEFAULT_MAJORITY_TIMEOUT_SECONDS

    def __post_init__(self) -> None:
        # One collection for two of these mixes their documents: history events read as applied
        # migrations with no file, the lock document as a changelog record, events in user_files.
        names = {
            "changelog_collection": self.changelog_collection,
            "lock_collection": self.lock_collection,
            "history_collection": self.history_collection,
        }
        for name, value in names.items():
            if value == MANAGED_COLLECTION:
                raise ConfigError(f"{name} must not be {MANAGED_COLLECTION!r}: that is the bot's collection")
            same = [other for other, used in names.items() if used == value and other != name]
            if same:
                raise ConfigError(f"{name} and {same[0]} must be different collections, both are {value!r}")
        if self.transactions not in TRANSACTION_MODES:
            raise ConfigError(f"transactions must be one of {TRANSACTION_MODES}, got {self.transactions!r}")
        for name in (
            "lock_lease_seconds", "lock_timeout_seconds", "lock_poll_seconds", "retry_seconds",
            "majority_timeout_seconds",
        ):  # fmt: skip
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not value > 0
                or value == float("inf")
            ):
                raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")


@dataclass(frozen=True)
class Entry:
    """One migration's status: from its file, its changelog record, or both."""

    id: str
    state: str  # pending | applying | reverting | failed | applied
    title: str | None = None
    checksum: str | None = None  # of the file now (None: the file is gone)
    recorded_checksum: str | None = None
    applied_at: dt.datetime | None = None
    record: dict[str, Any] | None = None
    out_of_order: bool = False
    resumable: bool = False

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

    def check_code(self) -> int:
        """The exit code ``status --check`` gives: the one a plain ``up`` would refuse with
        (4 an edited, missing or out-of-order migration, 6 one a person must look at), else 3
        when ``up`` has work (pending, or interrupted migrations it resumes by itself), else 0.
        One judgement, the one ``up`` makes, so the check can never disagree with it."""
        try:
            _check_history(self, allow_changed=False, allow_out_of_order=False, resume=False)
        except MigrationError as refused:
            return refused.exit_code
        return EXIT_PENDING if self.pending or self.interrupted else EXIT_OK

    @property
    def interrupted(self) -> list[Entry]:
        return [e for e in self.entries if e.state in log.INTERRUPTED_STATES]

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
                    "resumable": e.resumable,
                }
                for e in self.interrupted
            ],
        }


def status(db: Database[Any], migrations: Sequence[Migration], options: EngineOptions) -> Status:
    """Each migration's state. Read-only: creates no collection, index or lock. Reads the
    primary with majority read concern (retried through a failover within ``retry_seconds``)."""
    changelog = log.Changelog(db, options.changelog_collection, options.majority_timeout_seconds)
    records = retry_transient(changelog.records, timeout=options.retry_seconds, what="reading the changelog")
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
                resumable=resumable(migration) if migration else False,
            )
        )
    return Status(entries)


def _auto_resumable(entry: Entry) -> bool:
    """A migration an earlier run left behind that the next ``up`` may run again by itself:
    resumable, and either interrupted (its runner is gone: we hold the lock) or failed on a
    transient error (a failover, the server unreachable)."""
    if not entry.resumable or entry.missing_file:
        return False
    if entry.state in (log.APPLYING, log.REVERTING):
        return True
    return entry.state == log.FAILED and bool((entry.record or {}).get("transient"))


def _check_history(
    found: Status, *, allow_changed: bool, allow_out_of_order: bool, resume: bool
) -> list[Entry]:
    """Refuse what needs a person; return the interrupted entries this run will resume."""
    blocked = [e for e in found.interrupted if not resume and not _auto_resumable(e)]
    if blocked:
        lines = []
        for e in blocked:
            record = e.record or {}
            why = "not resumable" if not e.resumable else "failed on a non-transient error"
            lines.append(
                f"  {e.id}: {e.state} since {record.get('started_at')} on host "
                f"{record.get('host')} (run {record.get('run_id')}), {why}"
                + (f": {record['error']}" if record.get("error") else "")
            )
        raise InterruptedMigration(
            "an earlier run did not finish, and what it left cannot be resumed automatically "
            "(a person must look):\n" + "\n".join(lines) + "\n"
            "Its changes may be partial. Check the data, then either run `up --resume` to run it "
            "again, or `stamp ID` if it is complete. (Migrations that declare RESUMABLE = True, "
            "and the bundled ones, are resumed by the next `up` on their own.)"
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
    return list(found.interrupted)


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
    resumed: list[str] = field(default_factory=list)


def _transient(exc: BaseException) -> bool:
    """Whether ``exc``, or an error it was raised from, is one a later retry gets past (a
    failover, the server unreachable, retries that ran out of time)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (RetryTimeout, WTimeoutError)) or is_transient(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit: the migration called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


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
        self.options = options or EngineOptions()
        self.db = db
        # What migrations are given: the primary, majority reads, w: majority writes (bounded).
        self.mdb = log.tool_database(db, self.options.majority_timeout_seconds)
        self.migrations = list(migrations)
        self.report = report
        self.progress = progress
        self.clock = clock
        self.run_id = uuid.uuid4().hex[:12]
        self.host = f"{socket.gethostname()}:{os.getpid()}"
        self.changelog = log.Changelog(
            db, self.options.changelog_collection, self.options.majority_timeout_seconds
        )
        self.history = hist.History(
            db, self.options.history_collection, self.options.majority_timeout_seconds,
            retry_seconds=self.options.retry_seconds,
        )  # fmt: skip
        self._lock: LeaseLock | None = None
        self._acquiring: LeaseLock | None = None
        self._transactions: bool | None = None
        self._stop_signal: str | None = None
        self._interruptible = False
        self._lock_left = False
        self._started = False

    @property
    def _run_fields(self) -> dict[str, Any]:
        return {"host": self.host, "run_id": self.run_id}

    def _context(self, **overrides: Any) -> RunContext:
        # Under the lock, the steps check the fence before every write they send.
        fence = self._check_lock if self._lock is not None and not overrides.get("dry_run") else _ignore
        return RunContext(
            options=self.options.migration_options,
            report=self.report,
            progress=self.progress,
            fence=fence,
            **overrides,
        )

    def _record(self, event: str, **fields: Any) -> None:
        if not self.history.record(event, run_id=self.run_id, host=self.host, **fields):
            self.report(f"  warning: the history could not be written ({event}): MongoDB did not answer")

    def _retry(self, operation: Callable[[], Any], what: str) -> Any:
        return retry_transient(operation, timeout=self.options.retry_seconds, what=what)

    # -- signals -------------------------------------------------------------------------------

    def request_stop(self, reason: str = "SIGTERM") -> None:
        """Ask the run to stop at the next safe point (what the SIGTERM handler does)."""
        self._stop_signal = reason
        lock = self._acquiring
        if self._interruptible or (lock is not None and lock.interruptible):
            raise StopRequested(reason)

    @contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the run at a safe point (only in the main thread, where
        Python delivers signals)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, _frame: FrameType | None) -> None:
            self.request_stop(signal.Signals(signum).name)

        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _interruptible_now(self, yes: bool) -> None:
        """Enter (or leave) a section the stop handler may interrupt; a stop requested just
        before is honoured here, or it would wait for the section's end."""
        self._interruptible = yes
        if yes and self._stop_signal is not None:
            raise StopRequested(self._stop_signal)

    def _check_stop(self, before: str) -> None:
        if self._stop_signal is not None:
            self._record(hist.TERMINATED, detail=f"{self._stop_signal} received; stopped before {before}")
            raise Terminated(
                f"stopped by {self._stop_signal} before {before}: everything before it is recorded; "
                "the lock was released. The next `up` continues."
            )

    # -- the lock and the fence ----------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        lock = LeaseLock(
            self.db,
            collection=self.options.lock_collection,
            owner=self.run_id,
            host=self.host,
            lease_seconds=self.options.lock_lease_seconds,
            majority_timeout=self.options.majority_timeout_seconds,
        )
        self._acquiring = lock
        try:
            lock.acquire(
                self.options.lock_timeout_seconds, self.options.lock_poll_seconds, self.report,
                stop_requested=lambda: self._stop_signal,
            )  # fmt: skip
        finally:
            self._acquiring = None
        self._lock = lock
        try:
            yield
        finally:
            self._lock = None
            self._lock_left = not lock.release()

    def _supports_transactions(self) -> bool:
        if self._transactions is None:
            hello = self._retry(lambda: self.db.client.admin.command("hello"), "asking the server's topology")
            self._transactions = bool(hello.get("setName") or hello.get("msg") == "isdbgrid")
        return self._transactions

    def _check_lock(self) -> None:
        """The fence, on its own: raises ``LockLost`` unless the lease is still ours."""
        assert self._lock is not None
        self._lock.check(timeout=self.options.retry_seconds)

    def _fenced(self, write: Callable[[ClientSession | None], None], what: str) -> None:
        """Run a changelog ``write`` only while this run holds the lease: on a replica set, in
        one transaction with the lease's renewal (a runner taking the lock meanwhile conflicts);
        elsewhere right after checking the lease on the server (the write's own filter then
        refuses a record another run changed). Transient errors are retried within bounds."""
        assert self._lock is not None
        lock = self._lock
        if not self._supports_transactions():
            self._check_lock()
            self._retry(lambda: write(None), what)
            return

        def attempt() -> None:
            with (
                self.db.client.start_session() as session,
                session.start_transaction(**log.tool_settings(self.options.majority_timeout_seconds)),
            ):
                lock.check(session=session)
                write(session)

        self._retry(attempt, what)

    def _put(
        self, migration_id: str, expect: log.Expect, record: dict[str, Any]
    ) -> Callable[[ClientSession | None], None]:
        """A changelog write for ``_fenced``."""
        return lambda session: self.changelog.put(migration_id, expect, record, session)

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

    @contextmanager
    def _transaction(self) -> Iterator[ClientSession]:
        """A session in a transaction, set as the run context's: commits on exit, aborts on error.
        The lease is renewed inside it: the commit fails if another runner took the lock."""
        assert self._lock is not None
        with (
            self.db.client.start_session() as session,
            session.start_transaction(**log.tool_settings(self.options.majority_timeout_seconds)),
            running(self._context(session=session)),
        ):
            self._lock.check(session=session)
            yield session

    # -- one run: lock, history, signals, honest errors ------------------------------------------

    def _run(self, command: str, body: Callable[[RunResult], None], **details: Any) -> RunResult:
        result = RunResult(self.run_id)
        self._lock_left = False
        self._started = False
        self._stop_signal = None
        error: MigrationError | None = None
        with self._signals():
            try:
                try:
                    with self.locked():
                        self._started = True
                        self._record(hist.RUN_STARTED, command=command, **details)
                        try:
                            body(result)
                        except StopRequested as exc:
                            raise Terminated(
                                f"stopped by {exc}: the lock was released; the next `up` continues"
                            ) from None
                        except (PyMongoError, RetryTimeout) as exc:
                            raise MigrationError(self._unreachable(command, result, exc)) from exc
                        except LockLost as exc:
                            self._record(hist.LOCK_LOST, command=command, error=str(exc))
                            raise
                except StopRequested as exc:  # while waiting for the lock: nothing was written
                    raise Terminated(
                        f"stopped by {exc} while waiting for the lock; nothing was done"
                    ) from None
            except MigrationError as exc:
                error = exc
        if self._started:
            self._finish_record(command, result, error)
        if error is not None:
            if self._lock_left:
                raise type(error)(f"{error} {self._lock_note()}") from error.__cause__
            raise error
        if self._lock_left:
            self.report(self._lock_note())
        return result

    def _unreachable(self, command: str, result: RunResult, exc: BaseException) -> str:
        if isinstance(exc, WTimeoutError):
            why = (
                f"the replica set's majority did not acknowledge a write within "
                f"{self.options.majority_timeout_seconds:g} s (members down or lagging?)"
            )
        else:
            why = f"MongoDB did not answer within {self.options.retry_seconds:g} s of retries"
        return (
            f"`{command}` stopped: {why} ({_error_text(exc)}). Done before it: "
            f"{result.done or 'nothing'}. `migrate.py status` shows where the database stands "
            "once the server is back; the next `up` resumes resumable migrations by itself."
        )

    def _lock_note(self) -> str:
        return (
            "The lock could not be released (MongoDB did not answer): it is left to expire on its "
            f"own within {self.options.lock_lease_seconds:g} s."
        )

    def _finish_record(self, command: str, result: RunResult, exc: MigrationError | None) -> None:
        self._record(
            hist.RUN_FINISHED,
            command=command,
            done=list(result.done),
            outcome="ok" if exc is None else type(exc).__name__,
            exit_code=0 if exc is None else exc.exit_code,
            error=None if exc is None else str(exc),
        )

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

        Resumes by itself what an earlier run left ``applying``/``reverting`` (or ``failed`` on a
        transient error) when the migration is resumable. Raises ``InvalidHistory`` (edited
        applied file, out-of-order pending migration), ``InterruptedMigration`` (an earlier run
        left a migration that is not resumable: a person must look), ``LockTimeout``,
        ``LockLost`` (another runner took over: this one stopped), ``Terminated`` (SIGTERM), or
        ``MigrationError`` when a migration fails (recorded ``failed``, never ``applied``).
        """
        last = _target_index(self.migrations, target)
        if dry_run:
            return self.preview(
                target, allow_changed=allow_changed, allow_out_of_order=allow_out_of_order, resume=resume
            )[0]
        return self._run(
            "up",
            lambda result: self._up_locked(last, result, allow_changed, allow_out_of_order, resume),
            target=target,
            resume=resume or None,
        )

    def preview(
        self,
        target: str | None = None,
        *,
        allow_changed: bool = False,
        allow_out_of_order: bool = False,
        resume: bool = False,
    ) -> tuple[RunResult, ReadOnlyDatabase]:
        """``up --dry-run``: what each pending migration would send, and the read-only database
        whose overlay holds the state they would leave. Read-only: no lock, no changelog, no
        history; the history is checked as a real run would check it."""
        last = _target_index(self.migrations, target)
        result = RunResult(self.run_id)
        found = status(self.db, self.migrations, self.options)
        _check_history(found, allow_changed=allow_changed, allow_out_of_order=allow_out_of_order,
                       resume=resume)  # fmt: skip
        if allow_changed:  # what `up --accept-changed` would record (a changelog write)
            result.accepted_checksums = [e.id for e in found.changed]
        states = {e.id: e.state for e in found.entries}
        # One read-only database for the whole dry run: each migration is previewed against
        # the state the earlier pending ones would leave (its plan overlays the live state).
        preview = ReadOnlyDatabase(self.mdb)
        for migration in self.migrations[: last + 1]:
            if states.get(migration.id) != log.APPLIED:
                self._use_transaction(migration)  # `transactions: always` on a standalone fails here too
                result.planned[migration.id] = self._plan_one(migration, preview)
        return result, preview

    def _up_locked(
        self, last: int, result: RunResult, allow_changed: bool, allow_out_of_order: bool, resume: bool
    ) -> None:
        found = status(self.db, self.migrations, self.options)
        approved = {e.id for e in _check_history(
            found, allow_changed=allow_changed, allow_out_of_order=allow_out_of_order, resume=resume
        )}  # fmt: skip
        if allow_changed:
            for entry in found.changed:
                assert entry.checksum is not None
                self._accept_checksum(entry)
                result.accepted_checksums.append(entry.id)
        wanted = self.migrations[: last + 1]
        while True:
            # Re-read under the lease before each migration: never act on a stale pending list.
            self._check_lock()
            entries = {e.id: e for e in status(self.db, self.migrations, self.options).entries}
            todo = [m for m in wanted if entries[m.id].state != log.APPLIED and m.id not in result.done]
            if not todo:
                return
            migration, entry = todo[0], entries[todo[0].id]
            if entry.state != "pending" and entry.id not in approved:
                raise LockLost(
                    f"{entry.id} is now {entry.state} by run {(entry.record or {}).get('run_id')}: "
                    "another runner wrote the changelog, so this run no longer holds the lock; it stopped"
                )
            self._check_stop(migration.id)
            self._apply_one(migration, entry.record)
            result.done.append(migration.id)
            if entry.record is not None:
                result.resumed.append(migration.id)

    def _accept_checksum(self, entry: Entry) -> None:
        assert entry.checksum is not None
        new, old = entry.checksum, entry.recorded_checksum
        now = read_clock(self.clock)

        def write(session: ClientSession | None) -> None:
            self.changelog.set_fields(
                entry.id, {"state": log.APPLIED, "checksum": old},
                {"checksum": new, "checksum_accepted_at": now}, session=session,
            )  # fmt: skip

        self._fenced(write, f"accepting the checksum of {entry.id}")
        self._record(hist.CHECKSUM_ACCEPTED, migration=entry.id, detail=f"{old} -> {new}")

    def _plan_one(self, migration: Migration, preview: ReadOnlyDatabase) -> list[str]:
        self.report(f"{migration.id}: {migration.title}")
        try:
            with running(self._context(dry_run=True)) as ctx:
                migration.up(preview)
        except MigrationError:
            raise
        except BaseException as exc:  # sys.exit() included: a dry run never exits 0 on it
            raise MigrationError(
                f"{migration.id} raised during the dry run (nothing was written): {_error_text(exc)}"
            ) from exc
        if not ctx.planned:
            self.report("  nothing to send")
        return ctx.planned

    def _apply_one(self, migration: Migration, previous: dict[str, Any] | None) -> None:
        expect = log.expectation(previous)
        if previous is not None:
            self.report(
                f"{migration.id}: resuming what run {previous.get('run_id')} on host "
                f"{previous.get('host')} left {previous.get('state')!r} (its runner is gone; "
                f"{'resumable' if resumable(migration) else 'resumed on request'})"
            )
            self._record(hist.RESUMED, migration=migration.id,
                         detail=f"left {previous.get('state')} by run {previous.get('run_id')}")  # fmt: skip
        self.report(f"{migration.id}: {migration.title}")
        started = read_clock(self.clock)
        if self._use_transaction(migration):
            self._apply_in_transaction(migration, expect, started)
            return
        mine = {"state": log.APPLYING, "run_id": self.run_id}
        self._fenced(
            lambda s: self.changelog.put(
                migration.id, expect, log.applying_record(migration.checksum, started, self._run_fields), s
            ),
            f"recording {migration.id} as applying",
        )
        self._record(hist.STARTED, migration=migration.id)
        try:
            self._interruptible_now(resumable(migration))
            with running(self._context()):
                migration.up(self.mdb)
        except StopRequested as stop:
            self._interruptible = False
            self._record(hist.INTERRUPTED, migration=migration.id,
                         detail=f"{stop} received; left 'applying' (resumable)")  # fmt: skip
            raise Terminated(
                f"stopped by {stop} during {migration.id}, which is resumable: it is left "
                "'applying' and the next `up` resumes it; the lock was released"
            ) from None
        except BaseException as exc:
            self._interruptible = False
            self._fail(migration, mine, exc)
        finally:
            self._interruptible = False
        applied = log.applied_record(migration.checksum, started, read_clock(self.clock), self._run_fields)
        self._fenced(
            lambda s: self.changelog.put(migration.id, mine, applied, s),
            f"recording {migration.id} as applied",
        )
        self._record(hist.APPLIED, migration=migration.id, duration_ms=applied["duration_ms"])
        self.report(f"  applied ({self._elapsed(started)})")

    def _apply_in_transaction(self, migration: Migration, expect: log.Expect, started: dt.datetime) -> None:
        try:
            with self._transaction() as session:
                migration.up(self.mdb)
                applied = log.applied_record(
                    migration.checksum, started, read_clock(self.clock), self._run_fields
                )
                self.changelog.put(migration.id, expect, applied, session=session)
        except LockLost:
            raise
        except BaseException as exc:
            self._record(hist.FAILED, migration=migration.id, error=_error_text(exc),
                         detail="rolled back: its transaction aborted")  # fmt: skip
            raise MigrationError(
                f"{migration.id} failed and its transaction was rolled back (schema "
                f"steps, which run outside it, stay): {_error_text(exc)}"
            ) from exc
        self._record(hist.APPLIED, migration=migration.id, detail="in a transaction")
        self.report(f"  applied in a transaction ({self._elapsed(started)})")

    def _fail(self, migration: Migration, mine: dict[str, Any], exc: BaseException) -> None:
        """Record a migration that raised (anything, ``SystemExit`` included) as failed, and
        raise the error that says the true state of its record and what happens next."""
        error = _error_text(exc)
        transient = isinstance(exc, Exception) and _transient(exc)
        fields = {
            "state": log.FAILED,
            "error": error,
            "failed_at": read_clock(self.clock),
            "transient": transient,
        }
        try:
            self._fenced(lambda s: self.changelog.set_fields(migration.id, mine, fields, s),
                         f"recording {migration.id} as failed")  # fmt: skip
            recorded = "It is recorded 'failed', not applied; its changes may be partial."
            if transient and resumable(migration):
                after = (
                    "The error is transient (a failover, the server unreachable) and the migration "
                    "is resumable: the next `up` resumes it by itself."
                )
            else:
                after = "Fix the cause, then `up --resume` (or `stamp ID` if it is complete)."
        except LockLost:
            raise
        except (PyMongoError, RetryTimeout) as write_error:
            recorded = (
                "It is still recorded 'applying', not 'failed': MongoDB did not answer when its "
                f"failure was to be recorded ({type(write_error).__name__})."
            )
            after = (
                "The next `up` resumes it by itself (it is resumable)."
                if resumable(migration)
                else "The next `up` stops on it (exit 6): check the data, then `up --resume` or `stamp ID`."
            )
        self._record(hist.FAILED, migration=migration.id, error=error, transient=transient)
        raise MigrationError(f"{migration.id} failed: {error}. {recorded} {after}") from exc

    def _elapsed(self, started: dt.datetime) -> str:
        return f"{(read_clock(self.clock) - started).total_seconds():.2f} s"

    # -- down ----------------------------------------------------------------------------------

    def down(self, target: str | None = None, *, steps: int | None = None, force: bool = False) -> RunResult:
        """Undo applied migrations, newest first: down to ``target`` (kept applied; ``"base"``
        undoes all), or the last ``steps`` (default 1). Refuses, before undoing anything, if one
        of them is irreversible and ``force`` is false. A revert is recorded ``reverting`` while
        it runs, so an interrupted one is never mistaken for applied: ``down`` again continues
        it, ``up`` re-applies it."""
        if target is not None and steps is not None:
            raise ConfigError("give either a target or a number of steps, not both")
        if steps is not None and steps < 1:
            raise ConfigError(f"steps must be at least 1, got {steps}")
        return self._run(
            "down", lambda result: self._down_locked(result, target, steps, force), target=target, steps=steps
        )

    def _down_locked(self, result: RunResult, target: str | None, steps: int | None, force: bool) -> None:
        found = status(self.db, self.migrations, self.options)
        unfinished = [e for e in found.interrupted if e.state != log.REVERTING]
        if unfinished:
            # Undoing around a half-applied migration would undo the wrong things: finish it first.
            lines = [f"  {e.id}: {e.state} (run {(e.record or {}).get('run_id')})" for e in unfinished]
            raise InterruptedMigration(
                "an earlier run did not finish applying:\n" + "\n".join(lines) + "\n"
                "`down` undoes nothing until it is finished: run `up` (it resumes resumable "
                "migrations by itself; `up --resume` for the others), or `stamp ID` if it is complete."
            )
        _check_history(found, allow_changed=True, allow_out_of_order=True, resume=True)
        applied = [e.id for e in found.entries if e.state in (log.APPLIED, log.REVERTING)]
        if target is not None:
            keep = _target_index(self.migrations, target)
            kept = {m.id for m in self.migrations[: keep + 1]}
            undo = [i for i in reversed(applied) if i not in kept]
        else:
            undo = list(reversed(applied))[: steps or 1]
        by_id = {m.id: m for m in self.migrations}
        missing = [i for i in undo if i not in by_id]
        if missing:
            raise InvalidHistory(f"applied migration(s) {missing} have no file: they cannot be undone")
        blocked = [i for i in undo if not by_id[i].reversible]
        if blocked and not force:
            raise IrreversibleMigration(
                f"{blocked[0]} cannot be undone (REVERSIBLE = False); nothing was undone. "
                "`down --force` runs its down() anyway: read it first."
            )
        for migration_id in undo:
            self._check_stop(f"undoing {migration_id}")
            self._check_lock()
            self._undo_one(by_id[migration_id])
            result.done.append(migration_id)

    def _undo_one(self, migration: Migration) -> None:
        self.report(f"undo {migration.id}: {migration.title}")
        record = self._retry(lambda: self.changelog.record(migration.id), "reading the changelog")
        if record is None or record.get("state") not in (log.APPLIED, log.REVERTING):
            raise LockLost(f"{migration.id} was changed by another run meanwhile; this run stopped")
        expect = {"state": record.get("state"), "run_id": record.get("run_id")}
        if self._use_transaction(migration):
            try:
                with self._transaction() as session:
                    migration.down(self.mdb)
                    self.changelog.remove(migration.id, expect, session=session)
            except LockLost:
                raise
            except BaseException as exc:
                self._record(hist.FAILED, migration=migration.id, direction="down", error=_error_text(exc))
                raise MigrationError(
                    f"undoing {migration.id} failed and its transaction was rolled back: {_error_text(exc)}"
                ) from exc
            self._record(hist.REVERTED, migration=migration.id, detail="in a transaction")
            return
        mine = {"state": log.REVERTING, "run_id": self.run_id}
        fields = {**mine, "host": self.host, "revert_started_at": read_clock(self.clock)}
        if record.get("state") == log.REVERTING:
            self.report(f"  continuing the revert that run {record.get('run_id')} left unfinished")
        self._fenced(lambda s: self.changelog.set_fields(migration.id, expect, fields, s),
                     f"recording {migration.id} as reverting")  # fmt: skip
        self._record(hist.REVERT_STARTED, migration=migration.id)
        try:
            self._interruptible_now(resumable(migration))
            with running(self._context()):
                migration.down(self.mdb)
        except StopRequested as stop:
            self._interruptible = False
            self._record(hist.INTERRUPTED, migration=migration.id, direction="down",
                         detail=f"{stop} received; left 'reverting'")  # fmt: skip
            raise Terminated(
                f"stopped by {stop} while undoing {migration.id}: it is recorded 'reverting' "
                "(half reverted). `down` again continues the revert; `up` re-applies it."
            ) from None
        except BaseException as exc:
            self._interruptible = False
            error = _error_text(exc)
            self._record(hist.FAILED, migration=migration.id, direction="down", error=error)
            with suppress(PyMongoError, RetryTimeout):  # the record says 'reverting' either way: the truth
                self._fenced(lambda s: self.changelog.set_fields(migration.id, mine, {"error": error}, s),
                             f"recording the failed revert of {migration.id}")  # fmt: skip
            raise MigrationError(
                f"undoing {migration.id} failed: {error}. It is recorded 'reverting': its data may "
                "be half reverted. `down` again continues the revert; `up` re-applies it "
                "(resumable migrations by themselves)."
            ) from exc
        finally:
            self._interruptible = False
        self._fenced(
            lambda s: self.changelog.remove(migration.id, mine, s),
            f"removing {migration.id} from the changelog",
        )
        self._record(hist.REVERTED, migration=migration.id)

    # -- stamp ---------------------------------------------------------------------------------

    def stamp(self, target: str) -> RunResult:
        """Record every migration up to ``target`` as applied without running it (a baseline
        for a database that already has their changes); later ones are left as they are."""
        last = _target_index(self.migrations, target)
        return self._run("stamp", lambda result: self._stamp_locked(result, last), target=target)

    def _stamp_locked(self, result: RunResult, last: int) -> None:
        found = {e.id: e for e in status(self.db, self.migrations, self.options).entries}
        for migration in self.migrations[: last + 1]:
            entry = found[migration.id]
            if entry.state == log.APPLIED:
                continue
            now = read_clock(self.clock)
            record = log.applied_record(migration.checksum, now, now, self._run_fields, stamped=True)
            expect = log.expectation(entry.record)
            self._fenced(self._put(migration.id, expect, record), f"stamping {migration.id}")
            self._record(hist.STAMPED, migration=migration.id,
                         detail=None if entry.record is None else f"was {entry.state}")  # fmt: skip
            result.done.append(migration.id)


def unlock(db: Database[Any], options: EngineOptions, *, force: bool = False) -> dict[str, Any] | None:
    """Release the migration lock if its lease has expired (or, with ``force``, whatever it is);
    return the holder it had (``None`` if unlocked). Raises ``LockHeld`` naming a live holder.
    A release is appended to the history."""
    holder = release_lock(db, options.lock_collection, force=force)
    if holder is not None:
        history = hist.History(db, options.history_collection, options.majority_timeout_seconds,
                               retry_seconds=options.retry_seconds)  # fmt: skip
        history.record(
            hist.UNLOCKED, run_id=uuid.uuid4().hex[:12], host=f"{socket.gethostname()}:{os.getpid()}",
            detail=f"released the lock of run {holder.get('owner')} on host {holder.get('host')}"
            + (" (forced)" if force else ""), holder=holder.get("owner"), forced=force,
        )  # fmt: skip
    return holder


def lock_holder(db: Database[Any], options: EngineOptions) -> dict[str, Any] | None:
    return read_lock(db, options.lock_collection)


def history(
    db: Database[Any], options: EngineOptions, *, limit: int | None = None, run_id: str | None = None
) -> list[dict[str, Any]]:
    """The history's events, oldest first (the newest ``limit``). Read-only."""
    return hist.History(db, options.history_collection, options.majority_timeout_seconds).events(
        limit, run_id
    )
