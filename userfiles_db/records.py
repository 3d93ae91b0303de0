"""The rules of a user_files record, written once and used by every API.

- what "live" means (the query filter every read applies, and the final check of legacy strings),
- how a caller's ``file_data`` is validated and completed before a save,
- how a stored document is turned into the plain dict callers get back,
- the one total order of a user's records, and which records the per-user limit evicts.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import bson
from bson.datetime_ms import DatetimeMS
from bson.errors import BSONError
from bson.tz_util import utc as BSON_UTC

from userfiles_db.clock import UTC, to_bson_time
from userfiles_db.config import Settings
from userfiles_db.errors import ConfigurationError, InvalidFileData
from userfiles_db.schema import CollectionSchema

# The bot's legacy field names and their canonical ones.
LEGACY_NAMES = {"uploaded_at": "created_at", "file_size": "size"}
ORIGINS = ("upload", "generated")
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
_INT64 = 2**63

# ISO-8601 as the legacy writers spell it: extended or basic format, "T", "t" or a space between
# date and time, any number of fraction digits, and an optional "Z" or +hh[:mm] offset.
_ISO = re.compile(
    r"""\s*(?P<y>\d{4})(?P<dash>-?)(?P<mo>\d{2})(?P=dash)(?P<d>\d{2})
    (?:[Tt\ ](?P<h>\d{2})(?::?(?P<mi>\d{2})(?::?(?P<s>\d{2})(?:[.,](?P<f>\d+))?)?)?
    \s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?)?\s*""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Reading:
    """What a legacy date string names: ``moment`` is the one instant the store (and migration
    0002, which converts on the server) takes it to be; ``earliest`` and ``latest`` differ when the
    string is a local time the zone's clock shows twice (DST fall-back) or never (spring-forward)."""

    moment: dt.datetime
    earliest: dt.datetime
    latest: dt.datetime

    @property
    def exact(self) -> bool:
        return self.earliest == self.latest


def parse_iso(text: str) -> dt.datetime | None:
    """The datetime an ISO-8601 string spells (naive when it has no offset); ``None`` if it is not
    one. Fraction digits past the microsecond are dropped (BSON keeps milliseconds anyway)."""
    match = _ISO.fullmatch(text)
    if match is None:
        return None
    part = match.groupdict()
    try:
        value = dt.datetime(
            int(part["y"]), int(part["mo"]), int(part["d"]),
            int(part["h"] or 0), int(part["mi"] or 0), int(part["s"] or 0),
            int((part["f"] or "0")[:6].ljust(6, "0")),
        )  # fmt: skip
    except ValueError:
        return None
    zone = part["tz"]
    if zone:
        if zone in "Zz":
            return value.replace(tzinfo=UTC)
        digits = zone[1:].replace(":", "")
        offset = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
        if offset >= dt.timedelta(hours=24):
            return None
        try:
            return value.replace(tzinfo=dt.timezone(-offset if zone[0] == "-" else offset))
        except ValueError:
            return None
    return value


def _reading(value: dt.datetime, zone: dt.tzinfo | None) -> Reading | None:
    """``value`` placed in time; a naive one in ``zone`` (``None``: this process's local zone)."""
    try:
        if value.tzinfo is not None:
            moment = to_bson_time(value)
            return Reading(moment, moment, moment)
        if zone is None:
            first = to_bson_time(value.replace(fold=0).astimezone(UTC))
            second = to_bson_time(value.replace(fold=1).astimezone(UTC))
        else:
            first = to_bson_time(value.replace(tzinfo=zone, fold=0))
            second = to_bson_time(value.replace(tzinfo=zone, fold=1))
    except (OverflowError, ValueError, OSError):
        return None
    if first == second:
        return Reading(first, first, first)
    # The wall time is ambiguous (shown twice) or missing (skipped). MongoDB's $dateFromString,
    # which migration 0002 uses, takes the later instant of an ambiguous time (the offset after
    # the fall-back) and the offset before the change for a missing one (fold=0): read the same.
    local = first.astimezone(zone).replace(tzinfo=None) if zone is not None else None
    missing = local is not None and local != to_bson_time(value).replace(tzinfo=None)
    moment = first if missing else second
    return Reading(moment, min(first, second), max(first, second))


@dataclass(frozen=True)
class LegacyTime:
    """How the bot's legacy dates map to time: ISO-8601 strings, naive ones in ``zone`` (its
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
        if not isinstance(name, str):
            raise ConfigurationError(f"legacy_timezone: must be a timezone name or None, got {name!r}")
        if name.upper() == "UTC":
            return cls(UTC)
        try:
            return cls(zoneinfo.ZoneInfo(name))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"legacy_timezone: unknown timezone {name!r}") from None

    def read(self, text: str) -> Reading | None:
        """What a stored legacy string names (naive ones in ``zone``); None if unparseable."""
        value = parse_iso(text)
        return None if value is None else _reading(value, self.zone)

    def parse(self, text: str) -> dt.datetime | None:
        """The moment a legacy string names, aware UTC at BSON precision; None if unparseable."""
        reading = self.read(text)
        return None if reading is None else reading.moment

    def format(self, moment: dt.datetime) -> str:
        """``moment`` as the legacy writer stores it: ``isoformat()`` of naive time in ``zone``."""
        return moment.astimezone(self.zone).replace(tzinfo=None).isoformat()


def read_local(text: str, near: dt.datetime | None = None) -> dt.datetime | None:
    """A string the CALLING process made (the bot's writer dict: ``datetime.now().isoformat()``):
    naive ones are this process's local time. Aware UTC at BSON precision; None if unparseable.

    A wall time the local clock shows twice (DST fall-back) is read as the instant nearest to
    ``near`` when given: the bot's ``uploaded_at`` is the time of the save itself, so in the
    repeated hour an upload is placed in the pass it was made in (otherwise the later one)."""
    value = parse_iso(text)
    reading = None if value is None else _reading(value, None)
    if reading is None:
        return None
    if near is not None and not reading.exact:
        return min((reading.latest, reading.earliest), key=lambda moment: abs(moment - near))
    return reading.moment


def live_filter(now: dt.datetime, legacy: LegacyTime) -> dict[str, Any]:
    """The query half of the one definition of a live record: ``expires_at`` null or missing, or
    later than ``now``; with legacy records about, every string ``expires_at`` too, which
    ``is_live`` then decides exactly (strings in other spellings, offsets and zones cannot be
    compared as text).

    Every read puts this in its query, so a record the TTL monitor has not deleted yet (it runs
    every 60 s, later under load) is never returned. Each branch is a bound on the indexes
    ``user_id_1_expires_at_-1`` and ``expires_at_1``.
    """
    branches: list[dict[str, Any]] = [{"expires_at": None}, {"expires_at": {"$gt": now}}]
    if legacy.in_queries:
        branches.append({"expires_at": {"$type": "string"}})
    return {"$or": branches}


def is_live(document: Mapping[str, Any], now: dt.datetime, legacy: LegacyTime) -> bool:
    """The second half of the live rule, for a document ``live_filter`` matched: a legacy string
    ``expires_at`` is live only if every instant it may name is later than ``now`` (an
    unparseable one never is). Dates and null were decided by the server."""
    expires = document.get("expires_at")
    if not isinstance(expires, str):
        return True
    reading = legacy.read(expires)
    return reading is not None and reading.earliest > now


def expired_filter(now: dt.datetime) -> dict[str, Any]:
    """Records whose date ``expires_at`` is at or before ``now`` (strings: see ``expired_strings``)."""
    return {"expires_at": {"$lte": now}}


STRING_EXPIRY_FILTER: dict[str, Any] = {"expires_at": {"$type": "string"}}


def surely_expired(expires: str, now: dt.datetime, legacy: LegacyTime) -> bool:
    """A legacy ``expires_at`` string every reading of which is at or before ``now``: only those
    are deleted by the fallback clean-up (an ambiguous or unparseable one never is)."""
    reading = legacy.read(expires)
    return reading is not None and reading.latest <= now


def check_user_id(user_id: object) -> int:
    """``user_id`` if it is an int (a Discord id) BSON can store; raises ``InvalidFileData``."""
    if isinstance(user_id, bool) or not isinstance(user_id, int):
        raise InvalidFileData(f"user_id: must be an int, got {type(user_id).__name__} {user_id!r}")
    if not -_INT64 <= user_id < _INT64:
        raise InvalidFileData(f"user_id: must fit in 64 bits (a Discord id), got {user_id!r}")
    return user_id


def check_file_id(file_id: object) -> str:
    """``file_id`` if it is a non-empty string; raises ``InvalidFileData`` otherwise."""
    if not isinstance(file_id, str) or not file_id:
        raise InvalidFileData(
            f"file_id: must be a non-empty string, got {type(file_id).__name__} {file_id!r}"
        )
    _check_text("file_id", file_id)
    return file_id


def _check_text(name: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidFileData(
            f"{name}: contains characters that are not valid text (lone surrogates)"
        ) from None


def check_paths(paths: object) -> list[str]:
    """A collection of file paths (strings); raises ``InvalidFileData`` otherwise."""
    if isinstance(paths, (str, bytes)) or not isinstance(paths, Iterable):
        raise InvalidFileData(f"paths: must be a collection of strings, got {type(paths).__name__}")
    out = []
    for path in paths:
        if not isinstance(path, str):
            raise InvalidFileData(f"paths: every path must be a string, got {type(path).__name__} {path!r}")
        _check_text("paths", path)
        out.append(path)
    return out


def owner_filter(file_id: object, user_id: object | None) -> dict[str, Any]:
    """Match one file by id, and only its owner's when ``user_id`` is given."""
    query: dict[str, Any] = {"file_id": check_file_id(file_id)}
    if user_id is not None:
        query["user_id"] = check_user_id(user_id)
    return query


def origin_of(document: Mapping[str, Any]) -> str:
    """A record's origin: "generated", or "upload" (absent, null and anything else)."""
    return "generated" if document.get("origin") == "generated" else "upload"


def origin_filter(origin: str) -> dict[str, Any]:
    """The records ``origin_of`` counts as ``origin``."""
    return {"origin": "generated"} if origin == "generated" else {"origin": {"$ne": "generated"}}


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
    def origin(self) -> str:
        return origin_of(self.set_fields)

    @property
    def update(self) -> dict[str, Any]:
        update: dict[str, Any] = {"$set": self.set_fields}
        if self.defaults:
            update["$setOnInsert"] = self.defaults
        return update

    @property
    def canonical_key(self) -> dict[str, Any]:
        """The upsert filter of a canonical write: this user's file, unless stored in the legacy
        shape (then the insert collides on the unique index and the save converts the record)."""
        return {**self.key, **{old: {"$exists": False} for old in LEGACY_NAMES}}

    @property
    def document(self) -> dict[str, Any]:
        """The whole canonical record as a new insert would store it."""
        return {**self.defaults, **self.set_fields}

    def legacy_update(self, legacy: LegacyTime) -> dict[str, Any]:
        """The update that stores this record in exactly the old bot's shape: ``uploaded_at`` and
        ``file_size``, dates as naive ISO strings in the legacy zone (``None`` for never)."""
        fields: dict[str, Any] = {}
        for key, value in self.document.items():
            if key == "created_at":
                fields["uploaded_at"] = legacy.format(value)
            elif key == "size":
                fields["file_size"] = value
            elif key == "expires_at":
                fields["expires_at"] = None if value is None else legacy.format(value)
            else:
                fields[key] = value
        return {"$set": fields, "$unset": {new: "" for new in LEGACY_NAMES.values()}}

    def merged_with(self, stored: Mapping[str, Any], legacy: LegacyTime) -> dict[str, Any]:
        """The canonical record of a re-save over ``stored`` (possibly legacy-shaped): stored values
        read as the store reads them, the defaults only where they were missing, the new fields on
        top."""
        current = {k: v for k, v in normalize(stored, legacy).items() if k not in LEGACY_NAMES}
        for key, value in self.defaults.items():
            if not isinstance(current.get(key), dt.datetime) and not (
                key == "expires_at" and key in current and current[key] is None
            ):
                current[key] = value
        current.update(self.set_fields)
        current.pop("_id", None)
        return current


def _check_date(name: str, value: object, nullable: bool) -> dt.datetime | None:
    if value is None and nullable:
        return None
    if not isinstance(value, dt.datetime):
        wanted = "a datetime or None" if nullable else "a datetime"
        raise InvalidFileData(f"{name}: must be {wanted}, got {type(value).__name__} {value!r}")
    try:
        return to_bson_time(value)
    except (OverflowError, ValueError):
        raise InvalidFileData(f"{name}: {value!r} cannot be stored as a date (out of range)") from None


def _from_legacy_writer(given: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The bot's current writer dict (``file_size``, ``uploaded_at``, ISO-string dates) in the
    canonical shape; any other dict unchanged (strings where dates belong stay an error there).

    The strings come from the calling process (``datetime.now().isoformat()``): naive ones are
    read in this process's local zone, not in ``legacy_timezone`` (which is for stored strings).
    """
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
            parsed = read_local(value, now if name == "created_at" else None)
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
    "never". Naive datetimes are taken as UTC; naive strings of the writer dict as local time.
    ``origin``, if given, is "upload" or "generated". Raises ``InvalidFileData`` naming the field.
    """
    if not isinstance(file_data, Mapping):
        raise InvalidFileData(f"file_data: must be a dict, got {type(file_data).__name__}")
    for key in file_data:
        if not isinstance(key, str) or not key or key.startswith("$") or "." in key:
            raise InvalidFileData(f"{key!r}: field names must be non-empty strings without '$' or '.'")
        _check_text("field name", key)
    if "_id" in file_data:
        raise InvalidFileData("_id: is managed by the database; leave it out")
    given = _from_legacy_writer(dict(file_data), now)
    if "origin" in given and given["origin"] not in ORIGINS:
        raise InvalidFileData(f"origin: must be 'upload' or 'generated', got {given['origin']!r}")
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
        try:
            defaults["expires_at"] = to_bson_time(
                created_at_value + dt.timedelta(hours=settings.expiration_hours)
            )
        except OverflowError:
            raise InvalidFileData(
                f"created_at: {created_at_value!r} plus {settings.expiration_hours:g} hours is past the "
                "largest storable date"
            ) from None

    problems = schema.problems({**defaults, **given})
    if problems:
        raise InvalidFileData("; ".join(problems))
    try:
        encoded = bson.encode({**defaults, **given})
    except (BSONError, TypeError, OverflowError, ValueError) as exc:
        raise InvalidFileData(f"file_data: cannot be stored in MongoDB: {exc}") from None
    if len(encoded) > MAX_DOCUMENT_BYTES - 64 * 1024:
        raise InvalidFileData(
            f"file_data: the record is {len(encoded)} bytes; MongoDB stores at most 16 MiB per record"
        )
    return PreparedSave(
        file_id=given["file_id"], user_id=given["user_id"], set_fields=given, defaults=defaults
    )


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = dt.datetime(1970, 1, 1)


def as_utc(value: Any) -> Any:
    """A datetime as aware UTC (naive ones are UTC, as PyMongo reads them; a ``DatetimeMS`` from a
    client with ``datetime_conversion=DATETIME_MS`` too, when in range); anything else as is. One
    already in UTC (from a ``tz_aware`` client) is returned as it is: no copy."""
    if isinstance(value, dt.datetime):
        zone = value.tzinfo
        if zone is None:
            if type(value) is dt.datetime:
                return _EPOCH + (value - _NAIVE_EPOCH)  # replace(tzinfo=UTC), ten times cheaper
            return value.replace(tzinfo=UTC)
        if zone is UTC or zone is BSON_UTC:
            return value
        return value.astimezone(UTC)
    if isinstance(value, DatetimeMS):
        try:
            return _EPOCH + dt.timedelta(milliseconds=int(value))
        except OverflowError:
            return value
    return value


_OLDEST = dt.datetime.min.replace(tzinfo=UTC)
_MISSING = object()
_CANONICAL_FIELDS = frozenset(
    {
        "_id", "file_id", "user_id", "filename", "file_type", "file_path", "size", "created_at",
        "expires_at", "origin",  # origin: a plain string, so a generated file keeps the fast path
    }
)  # fmt: skip


def normalize(document: Mapping[str, Any], legacy: LegacyTime) -> dict[str, Any]:
    """A stored document as callers get it: a plain dict in the canonical shape, no ``_id``,
    datetimes aware UTC, ``expires_at`` always present (``None`` when the record never expires).

    Legacy records (``uploaded_at``, ``file_size``, ISO-string dates in any ISO spelling) come back
    canonical, times read exactly as migration 0002 converts them; a string that does not parse is
    returned as it is. Works with or without ``tz_aware``, and with ``DATETIME_MS`` clients.
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


def order_key(record: Mapping[str, Any]) -> tuple[dt.datetime, str]:
    """The one total order of a user's records, newest first when sorted descending: creation time
    (unreadable ones oldest), then ``file_id`` (unique) as the tie-break. Every saver computes it
    the same way from the stored values, so concurrent saves agree on what lies past the limit."""
    created = record.get("created_at")
    file_id = record.get("file_id")
    return (
        created if isinstance(created, dt.datetime) else _OLDEST,
        file_id if isinstance(file_id, str) else "",
    )


def newest_first(documents: list[dict[str, Any]], legacy: LegacyTime) -> list[tuple[dict[str, Any], Any]]:
    """Stored ``documents`` as ``(normalised record, _id)`` pairs in the total order, newest first
    (``order_key``). The one ordering every operation uses: listing, the limit's eviction choice,
    and delete-all.

    Sorted here rather than on the server: a user has few live records, and legacy records keep
    their creation time in a string under another name.
    """
    pairs = [(normalize(document, legacy), document.get("_id")) for document in documents]
    pairs.sort(key=lambda pair: order_key(pair[0]), reverse=True)
    return pairs


_BY_ORDER_KEY = itemgetter("created_at", "file_id")


def live_newest_first(
    documents: list[dict[str, Any]], now: dt.datetime, legacy: LegacyTime
) -> list[dict[str, Any]]:
    """What ``get_user_files`` returns for the ``documents`` its query matched: the live ones,
    normalised, newest first. Exactly ``[r for r, _ in newest_first(live documents)]``.

    ``documents`` are the runner's own fresh dicts (nobody else holds them), so canonical ones
    are normalised in place: no copy, no per-record function call, and one C-level sort key. The
    first record that is not a plain canonical dict with naive or UTC datetimes sends the whole
    list down the general path (``normalize`` is idempotent, so records already done are fine).
    A naive datetime (UTC, as PyMongo decodes it) becomes aware as ``_EPOCH + (value -
    _NAIVE_EPOCH)``: the same value as ``replace(tzinfo=UTC)``, about ten times cheaper.
    """
    fields = _CANONICAL_FIELDS
    datetime = dt.datetime
    epoch, naive_epoch = _EPOCH, _NAIVE_EPOCH
    for document in documents:
        if type(document) is not dict or not document.keys() <= fields:
            break
        created = document.get("created_at")
        expires = document.get("expires_at", _MISSING)
        if type(created) is not datetime or type(document.get("file_id")) is not str:
            break
        if expires is not None and type(expires) is not datetime:
            break  # a string, missing, or anything else: the general rules decide
        zone = created.tzinfo
        if zone is None:
            document["created_at"] = epoch + (created - naive_epoch)
        elif zone is not UTC and zone is not BSON_UTC:
            break
        if expires is not None:
            zone = expires.tzinfo
            if zone is None:
                document["expires_at"] = epoch + (expires - naive_epoch)
            elif zone is not UTC and zone is not BSON_UTC:
                break
        document.pop("_id", None)
    else:
        documents.sort(key=_BY_ORDER_KEY, reverse=True)
        return documents
    live = [document for document in documents if is_live(document, now, legacy)]
    return [record for record, _ in newest_first(live, legacy)]


def limit_listing_filter(prepared: PreparedSave, now: dt.datetime, legacy: LegacyTime) -> dict[str, Any]:
    """The user's live records of the saved record's origin, the saved one included: everything
    past the newest ``limit`` of them in the total order is evicted."""
    return {"user_id": prepared.user_id, **origin_filter(prepared.origin), **live_filter(now, legacy)}


LISTING_FIELDS: dict[str, int] = {"_id": 1, "file_id": 1, "created_at": 1, "uploaded_at": 1, "expires_at": 1}
