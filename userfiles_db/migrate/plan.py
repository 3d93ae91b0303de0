"""``plan``: per collection, the cumulative change the pending migrations would make, and its cost.

The pending migrations run as in ``up --dry-run`` (nothing is written; each step reads the state
the earlier ones would leave). The live state of each collection is then compared with the state
their plan leaves: a readable diff of options, validator and indexes, with what it costs where it
matters (an index build over N records, records a new or shorter TTL deletes at once, records a
stricter validator would reject, TTL values that are not dates). The state after them is also
compared with the declared schema: a difference there means a migration is missing.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pymongo.database import Database

from userfiles_db.clock import Clock, read_clock, utc_now
from userfiles_db.migrate.context import Reporter
from userfiles_db.migrate.discovery import Migration
from userfiles_db.migrate.drift import Difference, LiveCollection, compare, live_collection
from userfiles_db.migrate.engine import EngineOptions, Runner, RunResult
from userfiles_db.migrate.retry import retry_transient
from userfiles_db.migrate.steps import NOT_A_DATE, ReadOnlyDatabase
from userfiles_db.schema import CollectionSchema


@dataclass
class CollectionPlan:
    """One collection: what changes (``changes``, readable lines), what it costs (``costs``:
    counts by name, each explained in ``cost_lines``), and how the state after the pending
    migrations still differs from the declared schema (``remaining``)."""

    collection: str
    declared_version: int | None
    changes: list[str] = field(default_factory=list)
    costs: dict[str, int] = field(default_factory=dict)
    cost_lines: list[str] = field(default_factory=list)
    remaining: list[Difference] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "declared_version": self.declared_version,
            "changes": self.changes,
            "costs": self.costs,
            "cost_lines": self.cost_lines,
            "remaining_drift": [d.to_dict() for d in self.remaining],
        }


@dataclass
class Plan:
    run: RunResult
    collections: list[CollectionPlan]

    @property
    def pending(self) -> list[str]:
        return list(self.run.planned)

    @property
    def changes(self) -> bool:
        return bool(self.pending or any(c.changes for c in self.collections))

    @property
    def drift(self) -> bool:
        """Whether the state after the pending migrations still differs from the declared one."""
        return any(c.remaining for c in self.collections)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pending": self.pending,
            "planned": self.run.planned,
            "collections": [c.to_dict() for c in self.collections],
        }


def _index_line(mark: str, name: str, described: dict[str, Any]) -> str:
    keys = ", ".join(f"{f}: {d}" for f, d in described["key"])
    extra = [
        *(["unique"] if described.get("unique") else []),
        *([f"TTL {described['expireAfterSeconds']} s"] if "expireAfterSeconds" in described else []),
        *([f"options {described['options']}"] if described.get("options") else []),
    ]
    return f"{mark} index {name} {{{keys}}}" + (f" ({', '.join(extra)})" if extra else "")


def _validator_lines(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    def text(validator: dict[str, Any]) -> list[str]:
        return json.dumps(validator, indent=2, default=str).splitlines() if validator else ["(none)"]

    diff = difflib.unified_diff(
        text(before), text(after), "validator (live)", "validator (after)", lineterm="", n=2
    )
    return [f"  {line}" for line in diff]


def describe_changes(before: LiveCollection, after: LiveCollection) -> list[str]:
    """The change from ``before`` to ``after`` as readable lines (``+`` added, ``-`` removed,
    ``~`` changed in place); empty when they are the same."""
    if not before.exists and not after.exists:
        return []
    if not after.exists:
        return [f"- collection {before.name} (dropped)"]
    lines = []
    if not before.exists:
        lines.append(f"+ collection {after.name}" + (f" {after.options}" if after.options else ""))
    else:
        for option in sorted(set(before.options) | set(after.options)):
            if before.options.get(option) != after.options.get(option):
                lines.append(
                    f"~ option {option}: {before.options.get(option)!r} -> {after.options.get(option)!r}"
                )
    if before.validator != after.validator:
        lines.append("~ validator")
        lines += _validator_lines(before.validator, after.validator)
    for subject, old, new in (
        ("validationLevel", before.validation_level, after.validation_level),
        ("validationAction", before.validation_action, after.validation_action),
    ):
        if old != new:
            lines.append(f"~ {subject}: {old} -> {new}")
    for index in sorted(set(before.indexes) | set(after.indexes)):
        was, now = before.indexes.get(index), after.indexes.get(index)
        if was == now:
            continue
        if was is None and now is not None:
            lines.append(_index_line("+", index, now))
        elif now is None and was is not None:
            lines.append(_index_line("-", index, was))
        elif was is not None and now is not None:
            if _ttl_only(before, after, index):
                lines.append(
                    f"~ index {index}: TTL {was.get('expireAfterSeconds', 'none')} -> "
                    f"{now['expireAfterSeconds']} s (in place)"
                )
            else:
                lines += [_index_line("-", index, was), _index_line("+", index, now)]
    return lines


def _costs(
    plan: CollectionPlan, real: Database[Any], preview: ReadOnlyDatabase, before: LiveCollection,
    after: LiveCollection, now: dt.datetime, retry_seconds: float,
) -> None:  # fmt: skip
    name = plan.collection

    def counted(what: str, query: dict[str, Any]) -> int:
        # Counted on the state the planned steps leave (data conversions included).
        return int(retry_transient(partial(preview.count, name, query), timeout=retry_seconds,
                                   what=f"plan: counting {what} in {name}"))  # fmt: skip

    records = 0
    if before.exists:
        records = int(retry_transient(real[name].estimated_document_count, timeout=retry_seconds,
                                      what=f"plan: counting the records of {name}"))  # fmt: skip
    builds = [
        i for i, d in after.indexes.items() if before.indexes.get(i) != d and not _ttl_only(before, after, i)
    ]
    if builds and records:
        plan.costs["index_build_records"] = records
        plan.cost_lines.append(f"index build(s) {', '.join(builds)} over about {records} record(s)")
    for index, described in after.indexes.items():
        ttl = described.get("expireAfterSeconds")
        was = (before.indexes.get(index) or {}).get("expireAfterSeconds")
        if ttl is None or (was is not None and int(was) <= int(ttl)) or not before.exists:
            continue
        field_name = described["key"][0][0]
        cutoff = now - dt.timedelta(seconds=int(ttl))
        deleted = counted("expired records", {field_name: {"$lte": cutoff}})
        not_dates = counted("non-date values", {field_name: NOT_A_DATE})
        plan.costs[f"ttl_deletes_at_once:{index}"] = deleted
        plan.cost_lines.append(
            f"TTL {index}: {deleted} record(s) already past it, deleted at the monitor's next pass"
        )
        if not_dates:
            plan.costs[f"ttl_not_a_date:{index}"] = not_dates
            plan.cost_lines.append(
                f"TTL {index}: {not_dates} record(s) hold a {field_name} that is not a date (never deleted)"
            )
    ttl = after.options.get("expireAfterSeconds")
    was = before.options.get("expireAfterSeconds")
    if before.exists and ttl is not None and (was is None or int(was) > int(ttl)):
        # A clustered collection's TTL, on _id (only date _id values expire).
        deleted = counted("expired records", {"_id": {"$lte": now - dt.timedelta(seconds=int(ttl))}})
        plan.costs["ttl_deletes_at_once:_id"] = deleted
        plan.cost_lines.append(
            f"collection TTL: {deleted} record(s) already past it, deleted at the next pass"
        )
    if before.exists and after.validator and (before.validator, before.validation_level) != (
        after.validator, after.validation_level,
    ):  # fmt: skip
        failing = counted("records the validator rejects", {"$nor": [after.validator]})
        plan.costs["validator_rejects"] = failing
        action = "rejected" if after.validation_action == "error" else "warned about"
        plan.cost_lines.append(
            f"validator: {failing} existing record(s) fail it (not re-checked; updates to them {action})"
        )


def _ttl_only(before: LiveCollection, after: LiveCollection, index: str) -> bool:
    was, now = before.indexes.get(index), after.indexes.get(index)
    if was is None or now is None:
        return False
    return {k: v for k, v in was.items() if k != "expireAfterSeconds"} == {
        k: v for k, v in now.items() if k != "expireAfterSeconds"
    } and "expireAfterSeconds" in now


def _ignore(_line: str) -> None:
    return None


def plan(
    db: Database[Any],
    migrations: Sequence[Migration],
    options: EngineOptions,
    declared: dict[str, CollectionSchema] | None = None,
    *,
    target: str | None = None,
    report: Reporter | None = None,
    clock: Clock = utc_now,
) -> Plan:
    """What ``up`` (to ``target``) would change, per collection: the collections the pending
    migrations touch and every declared one, and (planning to the last migration) how the state
    after them still differs from ``declared``. Read-only. Raises what ``up --dry-run`` raises."""
    runner = Runner(db, migrations, options, report=report or _ignore)
    result, preview = runner.preview(target)
    declared = declared or {}
    names = sorted(set(declared) | set(preview.planned_collections()))
    now = read_clock(clock)
    to_the_end = target is None or (bool(migrations) and target == migrations[-1].id)
    plans = []
    for name in names:
        before = live_collection(runner.mdb, name)
        after = live_collection(preview, name)
        schema = declared.get(name)
        entry = CollectionPlan(name, schema.version if schema else None, describe_changes(before, after))
        if entry.changes:
            _costs(entry, runner.mdb, preview, before, after, now, options.retry_seconds)
        if schema is not None and to_the_end:  # --to an earlier migration stops short on purpose
            entry.remaining = compare(schema, after)
        plans.append(entry)
    return Plan(result, plans)
