"""Benchmarks on the real server, side by side with raw PyMongo (and migrate-mongo) in one run.

    python -m bench                 # quick: 100,000 records, about a minute
    python -m bench --size full     # 1,000,000 records (100,000 users), a few minutes
    python -m bench --records 250000 --skip-node

Starts its own mongod (the test extra's) in a temporary directory with the TTL monitor disabled, so
expired records pile up as they do when the monitor lags, and prints one table of figures.
"""

from __future__ import annotations

import argparse
import sys

from bench.run import main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--size", choices=["quick", "full"], default="quick")
    parser.add_argument("--records", type=int, help="records in the main collection (overrides --size)")
    parser.add_argument("--skip-node", action="store_true", help="skip the migrate-mongo comparison")
    parser.add_argument("--cache-gb", type=float, default=1.0, help="mongod's WiredTiger cache")
    args = parser.parse_args()
    records = args.records or (1_000_000 if args.size == "full" else 100_000)
    if records < 10_000:
        parser.error("--records must be at least 10000")
    sys.exit(main(records, skip_node=args.skip_node, cache_gb=args.cache_gb))
