"""A migration runner for the fault tests, run as its own process (``python -m tests.fault_runner``).

It runs ``Runner.up`` like ``migrate.py up`` and exits with the same codes, and it can pause
itself with SIGSTOP right after a given migration was recorded applied: a process paused at a
migration boundary, deterministically (its lease-renewing thread stops with it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

from pymongo import MongoClient

from userfiles_db.migrate import EngineOptions, MigrationError, Runner, discover


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("uri")
    parser.add_argument("db")
    parser.add_argument("migrations")
    parser.add_argument("--lease", type=float, default=1.0)
    parser.add_argument("--pause-after", default=None)
    args = parser.parse_args()
    current: list[str] = [""]
    migrations = discover(args.migrations)
    ids = {m.id for m in migrations}

    def report(line: str) -> None:
        print(line, flush=True)
        head = line.split(":", 1)[0]
        if head in ids:
            current[0] = head
        if args.pause_after and line.startswith("  applied") and current[0] == args.pause_after:
            os.kill(os.getpid(), signal.SIGSTOP)

    client: MongoClient[dict[str, Any]] = MongoClient(args.uri, tz_aware=True, serverSelectionTimeoutMS=5000)
    options = EngineOptions(lock_lease_seconds=args.lease, lock_poll_seconds=0.05, lock_timeout_seconds=30)
    code = 0
    try:
        result = Runner(client[args.db], migrations, options, report=report).up()
        print(f"done: {result.done}", flush=True)
    except MigrationError as exc:
        print(f"Error: {exc}", flush=True)
        code = exc.exit_code
    client.close()
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
