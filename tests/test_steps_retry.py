"""retry_transient / is_transient, without a server: fake operations raising real pymongo errors."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    ConfigurationError,
    DuplicateKeyError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteConcernError,
    WriteError,
    WTimeoutError,
)

from userfiles_db.migrate.errors import EXIT_ERROR, MigrationError
from userfiles_db.migrate.retry import RetryTimeout, is_transient, retry_transient


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def _failing(errors: list[BaseException], result: str = "done") -> tuple[Callable[[], str], list[int]]:
    """An operation raising each of ``errors`` in turn, then returning ``result``."""
    calls = [0]

    def operation() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return result

    return operation, calls


def _bulk(**details: object) -> BulkWriteError:
    return BulkWriteError({"writeErrors": [], "writeConcernErrors": [], "nInserted": 0, **details})


TRANSIENT = [
    pytest.param(OperationFailure("not primary", code=10107), id="NotWritablePrimary"),
    pytest.param(OperationFailure("not primary", code=13435), id="NotPrimaryNoSecondaryOk"),
    pytest.param(OperationFailure("not primary or secondary", code=13436), id="NotPrimaryOrSecondary"),
    pytest.param(OperationFailure("interrupted", code=11602), id="InterruptedDueToReplStateChange"),
    pytest.param(OperationFailure("stepped down", code=189), id="PrimarySteppedDown"),
    pytest.param(OperationFailure("shutting down", code=91), id="ShutdownInProgress"),
    pytest.param(OperationFailure("interrupted at shutdown", code=11600), id="InterruptedAtShutdown"),
    pytest.param(OperationFailure("unreachable", code=6), id="HostUnreachable-code"),
    pytest.param(OperationFailure("timeout", code=89), id="NetworkTimeout-code"),
    pytest.param(
        OperationFailure("x", code=112, details={"errorLabels": ["TransientTransactionError"]}),
        id="TransientTransactionError-label",
    ),
    pytest.param(
        OperationFailure("x", code=None, details={"errorLabels": ["RetryableWriteError"]}),
        id="RetryableWriteError-label",
    ),
    pytest.param(WriteConcernError("stepped down", code=189), id="WriteConcernError-189"),
    pytest.param(_bulk(writeConcernErrors=[{"code": 91, "errmsg": "shutdown"}]), id="bulk-wc-91"),
    pytest.param(_bulk(writeErrors=[{"index": 0, "code": 10107, "errmsg": "np"}]), id="bulk-write-10107"),
    pytest.param(AutoReconnect("connection closed"), id="AutoReconnect"),
    pytest.param(NotPrimaryError("not primary", {"code": 10107}), id="NotPrimaryError"),
    pytest.param(NetworkTimeout("timed out"), id="NetworkTimeout"),
    pytest.param(ServerSelectionTimeoutError("No replica set members match"), id="ServerSelectionTimeout"),
]

NOT_TRANSIENT = [
    pytest.param(DuplicateKeyError("dup", code=11000), id="DuplicateKey"),
    pytest.param(WriteError("Document failed validation", code=121), id="validation"),
    pytest.param(OperationFailure("bad", code=2), id="BadValue"),
    pytest.param(OperationFailure("unauthorized", code=13), id="Unauthorized"),
    pytest.param(WTimeoutError("waiting for replication timed out", code=64), id="WTimeout"),
    pytest.param(_bulk(writeErrors=[{"index": 0, "code": 11000, "errmsg": "dup"}]), id="bulk-dup"),
    pytest.param(ConfigurationError("bad URI"), id="ConfigurationError"),
    pytest.param(ValueError("not pymongo"), id="ValueError"),
    pytest.param(MigrationError("ours"), id="MigrationError"),
]


@pytest.mark.parametrize("error", TRANSIENT)
def test_transient_errors_are_recognised(error: BaseException) -> None:
    assert is_transient(error)


@pytest.mark.parametrize("error", NOT_TRANSIENT)
def test_other_errors_are_not_transient(error: BaseException) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize("error", TRANSIENT)
def test_a_failover_is_retried_until_the_operation_succeeds(error: BaseException) -> None:
    fake = FakeTime()
    operation, calls = _failing([error, error, error])
    assert retry_transient(operation, timeout=5, what="x", sleep=fake.sleep, clock=fake.clock) == "done"
    assert calls[0] == 4
    assert fake.sleeps == [0.05, 0.1, 0.2]  # exponential backoff


@pytest.mark.parametrize("error", NOT_TRANSIENT)
def test_other_errors_propagate_at_once(error: BaseException) -> None:
    fake = FakeTime()
    operation, calls = _failing([error])
    with pytest.raises(type(error)) as raised:
        retry_transient(operation, timeout=5, what="x", sleep=fake.sleep, clock=fake.clock)
    assert raised.value is error
    assert calls[0] == 1
    assert fake.sleeps == []


def test_a_non_transient_error_after_transient_ones_propagates() -> None:
    fake = FakeTime()
    duplicate = DuplicateKeyError("dup", code=11000)
    operation, calls = _failing([AutoReconnect("a"), duplicate])
    with pytest.raises(DuplicateKeyError):
        retry_transient(operation, timeout=5, what="x", sleep=fake.sleep, clock=fake.clock)
    assert calls[0] == 2


def test_the_wait_is_bounded_and_the_error_says_what_why_and_how_long() -> None:
    fake = FakeTime()
    last = OperationFailure("No primary: election in progress", code=10107)

    def operation() -> str:
        raise last if fake.now - 1000.0 >= 4.5 else AutoReconnect("connection reset")

    with pytest.raises(RetryTimeout) as raised:
        retry_transient(
            operation, timeout=5, what="converting batch 3 of user_files", sleep=fake.sleep, clock=fake.clock
        )
    error = raised.value
    assert isinstance(error, MigrationError)
    assert error.exit_code == EXIT_ERROR
    message = str(error)
    assert "converting batch 3 of user_files" in message
    assert "5 s" in message
    assert "OperationFailure: No primary: election in progress" in message
    assert error.__cause__ is last
    assert error.last_error is last
    assert error.what == "converting batch 3 of user_files"
    assert error.timeout == 5
    # Never sleeps past the bound, backs off up to 1 s, then gives up exactly at the bound.
    assert math.isclose(sum(fake.sleeps), 5.0)
    assert max(fake.sleeps) == 1.0
    assert fake.sleeps[:5] == [0.05, 0.1, 0.2, 0.4, 0.8]
    assert error.attempts == len(fake.sleeps) + 1


def test_a_zero_timeout_tries_once() -> None:
    fake = FakeTime()
    operation, calls = _failing([AutoReconnect("down")])
    with pytest.raises(RetryTimeout, match="after 0 s"):
        retry_transient(operation, timeout=0, what="x", sleep=fake.sleep, clock=fake.clock)
    assert calls[0] == 1
    assert fake.sleeps == []


@pytest.mark.parametrize("timeout", [-1.0, math.nan, math.inf])
def test_a_bad_bound_is_refused(timeout: float) -> None:
    operation, calls = _failing([])
    with pytest.raises(ValueError, match="finite number of seconds"):
        retry_transient(operation, timeout=timeout, what="x")
    assert calls[0] == 0


def test_interrupts_are_never_swallowed() -> None:
    fake = FakeTime()
    operation, calls = _failing([KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        retry_transient(operation, timeout=5, what="x", sleep=fake.sleep, clock=fake.clock)
    assert calls[0] == 1


def test_the_real_clock_and_sleep_are_the_defaults() -> None:
    operation, calls = _failing([AutoReconnect("blip")])
    assert retry_transient(operation, timeout=2, what="x") == "done"
    assert calls[0] == 2
