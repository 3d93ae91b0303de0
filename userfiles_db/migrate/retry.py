"""Retrying an operation through a failover, within a bound.

A routine step-down makes the primary refuse writes for 0.2-1.1 s; a replica set electing a new
primary, a server restarting or a dropped connection look the same to the client. Those errors say
"try again", and an idempotent operation (a batch conversion whose selector stops matching the
records it converted, a conditional changelog write) can simply be run again. Everything else
propagates at once: retrying a duplicate key or a validation error only hides it.

The wait is always bounded: after ``timeout`` seconds of transient errors the caller gets a
:class:`RetryTimeout` naming what it was doing, the bound and the last error, never a silent hang.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from userfiles_db.migrate.errors import MigrationError

T = TypeVar("T")

#: Labels the server (or the driver) puts on an error that is safe to retry.
TRANSIENT_LABELS = frozenset({"RetryableWriteError", "TransientTransactionError"})

#: Server error codes that mean "no primary here right now" or "the connection went away".
TRANSIENT_CODES: dict[int, str] = {
    6: "HostUnreachable",
    7: "HostNotFound",
    89: "NetworkTimeout",
    91: "ShutdownInProgress",
    134: "ReadConcernMajorityNotAvailableYet",
    189: "PrimarySteppedDown",
    262: "ExceededTimeLimit",
    9001: "SocketException",
    10058: "LegacyNotPrimary",
    10107: "NotWritablePrimary",
    11600: "InterruptedAtShutdown",
    11602: "InterruptedDueToReplStateChange",
    13435: "NotPrimaryNoSecondaryOk",
    13436: "NotPrimaryOrSecondary",
}

#: First pause between attempts, and the longest one (the backoff doubles up to it).
FIRST_DELAY = 0.05
MAX_DELAY = 1.0


class RetryTimeout(MigrationError):
    """An operation kept failing with transient errors (no primary, a failover) past its bound."""

    def __init__(self, what: str, timeout: float, attempts: int, last_error: BaseException) -> None:
        self.what = what
        self.timeout = timeout
        self.attempts = attempts
        self.last_error = last_error
        super().__init__(
            f"{what}: still failing after {timeout:g} s of retries ({attempts} attempts; "
            f"the server had no writable primary or the connection kept failing); "
            f"last error: {type(last_error).__name__}: {last_error}"
        )


def _codes(details: Any) -> Iterable[int]:
    """Error codes inside a bulk write's details (write errors and write concern errors)."""
    if not isinstance(details, dict):
        return
    for key in ("writeErrors", "writeConcernErrors"):
        for error in details.get(key) or ():
            if isinstance(error, dict) and isinstance(error.get("code"), int):
                yield error["code"]


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says "no primary / connection lost right now, try again".

    That is: a ``RetryableWriteError`` or ``TransientTransactionError`` label, a not-primary or
    interrupted-by-a-state-change code (also inside a write concern error or a bulk write's
    details), or a connection failure (``AutoReconnect``, ``NotPrimaryError``, ``NetworkTimeout``,
    ``ServerSelectionTimeoutError`` while the replica set has no primary yet). A write concern
    timeout is not: the bound it exceeded is the caller's own.
    """
    if not isinstance(exc, PyMongoError):
        return False
    if any(exc.has_error_label(label) for label in TRANSIENT_LABELS):
        return True
    if isinstance(exc, ConnectionFailure):  # AutoReconnect, NotPrimaryError, NetworkTimeout, ...
        return True
    if isinstance(exc, WTimeoutError):
        return False
    if isinstance(exc, BulkWriteError):
        return any(code in TRANSIENT_CODES for code in _codes(exc.details))
    if isinstance(exc, OperationFailure):
        return exc.code in TRANSIENT_CODES
    return False


def retry_transient(
    operation: Callable[[], T],
    *,
    timeout: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``operation``, retrying it on transient errors for up to ``timeout`` seconds.

    The pause between attempts doubles from 0.05 s up to 1 s and never overshoots the bound.
    ``operation`` must be safe to run again (idempotent): a transient error may come after the
    server applied the write.

    Raises whatever non-transient error ``operation`` raises, at once; :class:`RetryTimeout`
    (exit code 1) when the errors were still transient after ``timeout`` seconds; ``ValueError``
    for a negative or non-finite ``timeout``.
    """
    if not math.isfinite(timeout) or timeout < 0:
        raise ValueError(f"retry timeout must be a finite number of seconds >= 0, not {timeout!r}")
    deadline = clock() + timeout
    delay = FIRST_DELAY
    attempts = 0
    while True:
        attempts += 1
        try:
            return operation()
        except Exception as exc:
            if not is_transient(exc):
                raise
            remaining = deadline - clock()
            if remaining <= 0:
                raise RetryTimeout(what, timeout, attempts, exc) from exc
        sleep(min(delay, remaining))
        delay = min(delay * 2, MAX_DELAY)
