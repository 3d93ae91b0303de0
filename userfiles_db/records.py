"""The rules of a user_files record, written once and used by every API.

- what "live" means (the query filter every read applies),
- how a caller's ``file_data`` is validated and completed before a save,
- how a stored document is turned into the plain dict callers get back,
- which records the per-user limit evicts.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import bson
from bson.errors import BSONError
from bson.tz_util import utc as BSON_UTC

from userfiles_db.clock import UTC, to_bson_time
from userfiles_db.config import Settings
from userfiles_db.errors import ConfigurationError, InvalidFileData
from userfiles_db.schema import CollectionSchema

# The bot's legacy field names and their canonical ones.
LEGACY_NAMES = {"uploaded_at": "created_at", "file_size": "size"}


@dataclass(frozen=True)
class LegacyTime:
    """How the bot's legacy dates map to time: naive ISO-8601 strings in ``zone`` (its
    container's local time, UTC in practice). ``in_queries`` false: no legacy record is left in
    the collection (the migrations converted them), so queries need no string branch."""

    zone: dt.tzinfo
    in_queries: bool = True

    @classmethod
    def named(cls, name: str | None) -> LegacyTime:
        """``None``: no legacy records to query for (their shapes are still read and accepted,
        as UTC). Raises ``ConfigurationError`` for an unknown timezone name."""
        if name is None:
            return cls(UTC, in_queries=False)
        if name.upper() == "UTC":
            return cls(UTC)
        try:
            return cls(zoneinfo.ZoneInfo(name))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"legacy_timezone: unknown timezone {name!r}") from None

    def parse(self, text: str) -> dt.datetime | None:
        """The moment a legacy string names, aware UTC at BSON precision; None if unparseable."""
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        return to_bson_time(moment)

    def format(self, moment: dt.datetime) -> str:
        """``moment`` as the legacy writer would store it (``isoformat`` of naive local time)."""
        return moment.astimezone(self.zone).replace(tzinfo=None).isoformat(timespec="microseconds")


def live_filter(now: dt.datetime, legacy: LegacyTime) -> dict[str, Any]:
    """The one definition of a live record: ``expires_at`` null or missing, or later than ``now``.

    Every read puts this in its query, so a record the TTL monitor has not deleted yet (it runs
    every 60 s, later under load) is never returned. A legacy record's ``expires_at`` is an ISO
    string, compared as a string with ``now`` written the same way (type bracketing keeps the
    branches apart). Each branch is a bound on the indexes ``user_id_1_expires_at_-1`` and
    ``expires_at_1``.
    """
    branches: list[dict[str, Any]] = [{"expires_at": None}, {"expires_at": {"$gt": now}}]
    if legacy.in_queries:
        branches.append({"expires_at": {"$gt": legacy.format(now)}})
    return {"$or": branches}


def expired_filter(now: dt.datetime, legacy: LegacyTime) -> dict[str, Any]:
    """Records whose ``expires_at`` is at or before ``now`` (a date, or a legacy string)."""
    if not legacy.in_queries:
        return {"expires_at": {"$lte": now}}
    return {
        "$or": [
            {"expires_at": {"$lte": now}},
            {"expires_at": {"$type": "string", "$lte": legacy.format(now)}},
        ]
    }


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


def _from_legacy_writer(given: dict[str, Any], legacy: LegacyTime) -> dict[str, Any]:
    """The bot's current writer dict (``file_size``, ``uploaded_at``, ISO-string dates) in the
    canonical shape; any other dict unchanged (strings where dates belong stay an error there)."""
    if not any(name in given for name in LEGACY_NAMES):
        return given
    for old, new in LEGACY_NAMES.items():
        if old in given and new in given:
            raise InvalidFileData(f"{old}: give {old} or {new}, not both")
        if old in given:
            given[new] = given.pop(old)
    for name in ("created_at", "expires_at"):
        value = given.get(name)
        if isinstance(value, str):
            parsed = legacy.parse(value)
            if parsed is None:
                raise InvalidFileData(f"{name}: not an ISO-8601 date string: {value!r}")
            given[name] = parsed
    return given


def prepare_save(
    file_data: object,
    settings: Settings,
    schema: CollectionSchema,
    now: dt.datetime,
    legacy: LegacyTime = LegacyTime(UTC),
) -> PreparedSave:
    """Validate ``file_data`` (the seed document's shape, or the bot's current writer dict) and
    complete it for an upsert.

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
    given = _from_legacy_writer(dict(file_data), legacy)
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


def as_utc(value: Any) -> Any:
    """A datetime as aware UTC (naive ones are UTC, as PyMongo reads them); anything else as is.
    One already in UTC (from a ``tz_aware`` client) is returned as it is: no copy."""
    if isinstance(value, dt.datetime):
        zone = value.tzinfo
        if zone is None:
            return value.replace(tzinfo=UTC)
        if zone is UTC or zone is BSON_UTC:
            return value
        return value.astimezone(UTC)
    return value


_OLDEST = dt.datetime.min.replace(tzinfo=UTC)
_MISSING = object()
_CANONICAL_FIELDS = frozenset(
    {"_id", "file_id", "user_id", "filename", "file_type", "file_path", "size", "created_at", "expires_at"}
)


def normalize(document: Mapping[str, Any], legacy: LegacyTime) -> dict[str, Any]:
    """A stored document as callers get it: a plain dict in the canonical shape, no ``_id``,
    datetimes aware UTC, ``expires_at`` always present (``None`` when the record never expires).

    Legacy records (``uploaded_at``, ``file_size``, ISO-string dates) come back canonical; a
    string that does not parse is returned as it is. Works with or without ``tz_aware``. (Read
    without a projection and converted here: both a projection and tz-aware decoding cost more.)
    """
    created = document.get("created_at")
    expires = document.get("expires_at", _MISSING)
    if (
        type(created) is dt.datetime
        and (expires is None or type(expires) is dt.datetime)
        and document.keys() <= _CANONICAL_FIELDS
    ):
        # The hot path: a canonical record, whose only datetimes are these two.
        fast = dict(document)
        fast.pop("_id", None)
        fast["created_at"] = as_utc(created)
        if expires is not None:
            fast["expires_at"] = as_utc(expires)
        return fast
    out: dict[str, Any] = {"expires_at": None}
    for key, value in document.items():
        if key != "_id" and key not in LEGACY_NAMES:
            out[key] = as_utc(value)
    for old, new in LEGACY_NAMES.items():
        if new not in out and old in document:
            out[new] = as_utc(document[old])
    for name in ("created_at", "expires_at"):
        if isinstance(out.get(name), str):
            out[name] = legacy.parse(out[name]) or out[name]
    return out


def _created(pair: tuple[dict[str, Any], Any]) -> dt.datetime:
    created = pair[0].get("created_at")
    return created if isinstance(created, dt.datetime) else _OLDEST


def newest_first(documents: list[dict[str, Any]], legacy: LegacyTime) -> list[tuple[dict[str, Any], Any]]:
    """Stored ``documents`` as ``(normalised record, _id)`` pairs, newest first by creation time
    (unreadable ones last; ties keep the server's order). The one ordering every operation uses:
    listing, the limit's eviction choice, and delete-all.

    Sorted here rather than on the server: a user has few live records, and legacy records keep
    their creation time in a string under another name.
    """
    pairs = [(normalize(document, legacy), document.get("_id")) for document in documents]
    pairs.sort(key=_created, reverse=True)  # stable, also reversed
    return pairs


def eviction_candidates_filter(
    prepared: PreparedSave, now: dt.datetime, legacy: LegacyTime
) -> dict[str, Any]:
    """The user's other live records; past the newest ``max - 1`` of them, each is evicted."""
    return {
        "user_id": prepared.user_id,
        "file_id": {"$ne": prepared.file_id},
        **live_filter(now, legacy),
    }


EVICTION_FIELDS: dict[str, int] = {"_id": 1, "created_at": 1, "uploaded_at": 1}
