"""The run context a migration's ``up(db)`` / ``down(db)`` can read: options, session, dry run.

Migrations keep the plain signature ``up(db)``; what the engine knows about the current run is
reached with ``context()`` (a context variable, so concurrent runs in threads do not mix).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pymongo.client_session import ClientSession

Reporter = Callable[[str], None]
Progress = Callable[[str, int, int], None]


def _ignore(*_args: object) -> None:
    return None


@dataclass
class RunContext:
    """What the engine tells a running migration.

    ``options``: the engine's ``migration_options`` (``migrate.yaml``), e.g. ``legacy_timezone``.
    ``session``: the transaction's session when the migration runs in one, else ``None``; pass it
    as ``session=`` to data writes so they commit or abort with the changelog record.
    ``dry_run``: steps only describe what they would send; ``planned`` collects those lines.
    ``fence``: raises ``LockLost`` unless this run still holds the migration lock (one round trip
    to the server). The steps call it before every write they send (each batch of a data step), so
    a runner that lost its lease (paused past it, or ``unlock --force``) stops before writing
    again; custom code in a migration calls ``context().fence()`` before each write of its own.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    session: ClientSession | None = None
    dry_run: bool = False
    report: Reporter = _ignore
    progress: Progress = _ignore
    planned: list[str] = field(default_factory=list)
    fence: Callable[[], None] = _ignore

    def option(self, name: str, default: Any = None) -> Any:
        return self.options.get(name, default)

    def plan(self, line: str) -> None:
        self.planned.append(line)
        self.report(f"  would {line}")


_current: contextvars.ContextVar[RunContext] = contextvars.ContextVar("userfiles_db_migration")


def context() -> RunContext:
    """The current run's context (a default one outside a run: no options, no session)."""
    return _current.get(RunContext())


def current_session() -> ClientSession | None:
    """The current transaction's session, or ``None``: pass it as ``session=`` to data writes."""
    return context().session


@contextmanager
def running(ctx: RunContext) -> Iterator[RunContext]:
    token = _current.set(ctx)
    try:
        yield ctx
    finally:
        _current.reset(token)
