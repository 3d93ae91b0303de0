"""The rules of a user_files record, written once and used by every API.

- what "live" means (the query filter every read applies),
- how a caller's ``file_data`` is validated and completed before a save,
- how a stored document is turned into the plain dict callers get back,
- which records the per-user limit evicts.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson.errors import BSONError

from userfiles_db.clock import UTC, to_bson_time
from userfiles_db.config import Settings
from userfiles_db.errors import InvalidFileData
from userfiles_db.schema import CollectionSchema

# Newest first; _id breaks ties between records saved in the same millisecond.
NEWEST_FIRST: list[tuple[str, int]] = [("created_at", -1), ("_id", -1)]
# Returned records never carry the driver's ObjectId.
WITHOUT_ID: dict[str, int] = {"_id": 0}


def live_filter(now: dt.datetime) -> dict[str, Any]:
    """The one definition of a live record: ``expires_at`` null or missing, or later than ``now``.

    Every read puts this in its query, so a record the TTL monitor has not deleted yet (it runs
    every 60 s, later under load) is never returned. Both branches are bounds on the indexes
    ``user_id_1_expires_at_-1`` and ``expires_at_1``.
    """
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


def expired_filter(now: dt.datetime) -> dict[str, Any]:
    """Records whose ``expires_at`` is a date at or before ``now`` (null never matches)."""
    return {"expires_at": {"$lte": now}}


def check_user_id(user_id: object) -> int:
    """``user_id`` if it is an int (a Discord id); raises ``InvalidFileData`` otherwise."""
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise InvalidFileData(f"user_id: must be an int, got {type(user_id).__name__} {user_id!r}")
    return user_id


def check_file_id(file_id: object) -> str:
    """``file_id`` if it is a non-empty string; raises ``InvalidFileData`` otherwise."""
    if not isinstance(file_id, str) or not file_id:
        raise InvalidFileData(
            f"file_id: must be a non-empty string, got {type(file_id).__name__} {file_id!r}"
        )
    return file_id


def owner_filter(file_id: object, user_id: object | None) -> dict[str, Any]:
    """Match one file by id, and only its owner's when ``user_id`` is given."""
    query: dict[str, Any] = {"file_id": check_file_id(file_id)}
    if user_id is not None:
        query["user_id"] = check_user_id(user_id)
    return query


@dataclass(frozen=True)
class PreparedSave:
    """A validated save: what to ``$set`` (what the caller gave) and what to ``$setOnInsert``
    (the defaults, so re-saving a record does not move its creation or expiry)."""

    file_id: str
    user_id: int
    set_fields: dict[str, Any]
    defaults: dict[str, Any]

    @property
    def key(self) -> dict[str, Any]:
        """The upsert filter: the file, owned by this user."""
        return {"file_id": self.file_id, "user_id": self.user_id}

    @property
    def update(self) -> dict[str, Any]:
        update: dict[str, Any] = {"$set": self.set_fields}
        if self.defaults:
            update["$setOnInsert"] = self.defaults
        return update


def _check_date(name: str, value: object, nullable: bool) -> dt.datetime | None:
    if value is None and nullable:
        return None
    if not isinstance(value, dt.datetime):
        wanted = "a datetime or None" if nullable else "a datetime"
        raise InvalidFileData(f"{name}: must be {wanted}, got {type(value).__name__} {value!r}")
    return to_bson_time(value)


def prepare_save(
    file_data: object, settings: Settings, schema: CollectionSchema, now: dt.datetime
) -> PreparedSave:
    """Validate ``file_data`` (the seed document's shape) and complete it for an upsert.

    ``created_at`` defaults to ``now``; ``expires_at``, when absent, to ``created_at`` plus the
    expiration hours (``None`` when files never expire); an explicit ``expires_at=None`` means
    "never". Naive datetimes are taken as UTC. Raises ``InvalidFileData`` naming the field.
    """
    if not isinstance(file_data, Mapping):
        raise InvalidFileData(f"file_data: must be a dict, got {type(file_data).__name__}")
    for key in file_data:
        if not isinstance(key, str) or not key or key.startswith("$") or "." in key:
            raise InvalidFileData(f"{key!r}: field names must be non-empty strings without '$' or '.'")
    if "_id" in file_data:
        raise InvalidFileData("_id: is managed by the database; leave it out")
    given = dict(file_data)
    defaults: dict[str, Any] = {}

    created_at = _check_date("created_at", given.pop("created_at", None), nullable=True)
    if created_at is None:
        defaults["created_at"] = created_at_value = now
    else:
        given["created_at"] = created_at_value = created_at
    if "expires_at" in given:
        given["expires_at"] = _check_date("expires_at", given["expires_at"], nullable=True)
    elif settings.expiration_hours is None:
        defaults["expires_at"] = None
    else:
        defaults["expires_at"] = to_bson_time(
            created_at_value + dt.timedelta(hours=settings.expiration_hours)
        )

    problems = schema.problems({**defaults, **given})
    if problems:
        raise InvalidFileData("; ".join(problems))
    try:
        bson.encode({**defaults, **given})
    except (BSONError, TypeError, OverflowError) as exc:
        raise InvalidFileData(f"file_data: cannot be stored in MongoDB: {exc}") from None
    return PreparedSave(
        file_id=given["file_id"], user_id=given["user_id"], set_fields=given, defaults=defaults
    )


def normalize(document: Mapping[str, Any]) -> dict[str, Any]:
    """A stored document as callers get it: a plain dict, no ``_id``, datetimes aware UTC, and
    ``expires_at`` always present (``None`` when the record never expires).

    Works whether or not the client was created with ``tz_aware=True``.
    """
    out: dict[str, Any] = {"expires_at": None}
    for key, value in document.items():
        if key == "_id":
            continue
        if isinstance(value, dt.datetime):
            value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        out[key] = value
    return out


def eviction_candidates_filter(prepared: PreparedSave, now: dt.datetime) -> dict[str, Any]:
    """The user's other live records; past the newest ``max - 1`` of them, each is evicted."""
    return {"user_id": prepared.user_id, "file_id": {"$ne": prepared.file_id}, **live_filter(now)}
