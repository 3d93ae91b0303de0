"""The drift check: the live collection (validator, indexes, TTL) against the declared schema."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pymongo.database import Database

from userfiles_db.schema import CollectionSchema, IndexSpec


@dataclass(frozen=True)
class Difference:
    """One way the live collection differs from the declared schema."""

    subject: str
    declared: Any
    live: Any

    def __str__(self) -> str:
        return f"{self.subject}: declared {self.declared!r}, live {self.live!r}"

    def to_dict(self) -> dict[str, Any]:
        return {"subject": self.subject, "declared": repr(self.declared), "live": repr(self.live)}


def _describe(index: dict[str, Any]) -> dict[str, Any]:
    described: dict[str, Any] = {"key": [[str(f), int(d)] for f, d in index["key"]]}
    if index.get("unique"):
        described["unique"] = True
    if index.get("expireAfterSeconds") is not None:
        described["expireAfterSeconds"] = int(index["expireAfterSeconds"])
    return described


def _declared(spec: IndexSpec) -> dict[str, Any]:
    described: dict[str, Any] = {"key": [[f, d] for f, d in spec.keys]}
    if spec.unique:
        described["unique"] = True
    if spec.expire_after_seconds is not None:
        described["expireAfterSeconds"] = spec.expire_after_seconds
    return described


def drift(db: Database[Any], schema: CollectionSchema) -> list[Difference]:
    """Every difference between ``db[schema.collection]`` and ``schema``; empty when in line.
    Read-only."""
    name = schema.collection
    found = list(db.list_collections(filter={"name": name}))
    if not found:
        return [Difference(f"collection {name}", "exists", "missing")]
    options = found[0].get("options", {})
    differences = []
    for subject, declared, live in (
        ("validator", schema.validator, options.get("validator")),
        ("validationLevel", schema.validation_level, options.get("validationLevel", "strict")),
        ("validationAction", schema.validation_action, options.get("validationAction", "error")),
    ):
        if declared != live:
            differences.append(Difference(f"{name} {subject}", declared, live))
    indexes = db[name].index_information()
    for spec in schema.indexes:
        live_index = indexes.get(spec.name)
        want = _declared(spec)
        have = None if live_index is None else _describe(live_index)
        if want != have:
            differences.append(Difference(f"{name} index {spec.name}", want, have))
    declared_names = {spec.name for spec in schema.indexes} | {"_id_"}
    for extra in sorted(set(indexes) - declared_names):
        differences.append(Difference(f"{name} index {extra}", None, _describe(indexes[extra])))
    return differences
