"""``UserFilesMixin``: the bot's file methods, backed by ``AsyncUserFiles``.

The bot's ``DatabaseHandler`` keeps its async database in ``self.db`` (Motor or
``pymongo.AsyncMongoClient``). Mixed in, this class gives it everything its callers need (see
``docs/bot-integration.md`` for the exact edits):

- records in the shape the bot's callers read (the *bot view*, ``bot_view``): ``file_size``, and
  ``uploaded_at`` / ``expires_at`` as naive ISO strings in the bot process's local time, as the bot
  wrote them, next to the canonical ``size`` and ``created_at``;
- the bot's own result dicts for delete and reset (``{"success": ..., "message"/"error": ...}``);
- one argument order everywhere: ``(file_id, user_id)``, as the bot's functions take them;
- failures that reach the user: nothing is swallowed. Reads and the seed's methods raise; the
  delete and reset methods return ``success: False`` with an error that says the database is
  unavailable; an upload whose record was not saved raises after removing the file just written
  (kept when the database did not answer in time: the record may still land; the sweep decides).

Files of evicted and deleted records are removed from disk only inside ``user_files_root`` and only
when no live record of the user still names the same file (two records may share a path, in
any spelling).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pymongo.errors import ServerSelectionTimeoutError

from userfiles_db.disk import remove_record_files
from userfiles_db.errors import ConfigurationError, DatabaseUnavailable, SaveIncomplete, UserFilesError
from userfiles_db.records import ORIGINS, origin_of
from userfiles_db.store import AsyncUserFiles

logger = logging.getLogger("userfiles_db.compat")

DEFAULT_ROOT = "/tmp/bot_code_interpreter/user_files"
LEGACY_TIMEZONE_ENV = "USERFILES_LEGACY_TIMEZONE"
UNAVAILABLE = "the file database is unavailable right now"


def local_zone_name(environ: Mapping[str, str] | None = None) -> str:
    """The IANA name of this process's local zone: ``$TZ`` when it names one, else the zone
    ``/etc/localtime`` links to, else ``UTC``. The bot writes naive local strings in this zone."""
    env = os.environ if environ is None else environ
    name = env.get("TZ", "").lstrip(":")
    candidates = [name] if name else []
    if "zoneinfo/" in name:  # TZ=/usr/share/zoneinfo/Europe/Berlin, a zone file's path
        candidates.append(name.split("zoneinfo/", 1)[1])
    try:
        target = os.readlink("/etc/localtime")
    except OSError:
        target = ""
    if "zoneinfo/" in target:
        candidates.append(target.split("zoneinfo/", 1)[1])
    for candidate in candidates:
        try:
            zoneinfo.ZoneInfo(candidate)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            continue
        return candidate
    return "UTC"


def _file_key(path: str) -> str:
    """The file a record's path names, for "is it still in use": normalised, symlinks resolved
    (only ever used to keep a file, never to reach one)."""
    try:
        return os.path.realpath(path)
    except (OSError, ValueError):
        return path


def _differs_from_local_time(name: str) -> bool:
    """Whether zone ``name`` gives other UTC offsets than this process's local time (the C
    library's reading of ``$TZ``, which the old bot's ``datetime.now()`` uses): in January, July
    and now."""
    zone: dt.tzinfo = dt.timezone.utc if name.upper() == "UTC" else zoneinfo.ZoneInfo(name)
    now = dt.datetime.now(dt.timezone.utc)
    probes = [now, now.replace(month=1, day=15, hour=12), now.replace(month=7, day=15, hour=12)]
    return any(p.astimezone().utcoffset() != p.astimezone(zone).utcoffset() for p in probes)


def default_legacy_timezone() -> str:
    """The zone of the old bot's stored naive strings: ``$USERFILES_LEGACY_TIMEZONE``, else UTC when
    this process runs in UTC (the bot container's usual zone). Any other local zone raises
    ``ConfigurationError`` at start-up: the migrations read the same strings in the same variable
    (default UTC), so guessing the process's zone here would let the two read them apart."""
    name = os.environ.get(LEGACY_TIMEZONE_ENV)
    if name:
        return name
    if _differs_from_local_time("UTC"):
        local = local_zone_name()
        shown = local if not _differs_from_local_time(local) else os.environ.get("TZ", "")
        raise ConfigurationError(
            f"this process runs in local time {shown!r}, not UTC: set {LEGACY_TIMEZONE_ENV} to the IANA "
            "zone the old bot wrote its naive dates in (e.g. America/New_York), here and for "
            "userfiles-migrate, which reads them in the same variable"
        )
    return "UTC"


def _local_string(value: Any) -> Any:
    """An aware datetime as the bot writes one: ``isoformat()`` of naive local time. A date at the
    datetime limits whose local time is outside years 1-9999 (e.g. 9999-12-31 east of UTC) is
    given in UTC instead of failing the whole read."""
    if isinstance(value, dt.datetime):
        try:
            local = value.astimezone()
        except (OverflowError, ValueError):
            local = value
        return local.replace(tzinfo=None).isoformat()
    return value


def bot_view(record: Mapping[str, Any]) -> dict[str, Any]:
    """A canonical record as the bot's callers read it.

    Adds ``file_size`` (= ``size``), ``uploaded_at`` (``created_at`` as a naive local ISO string,
    which ``/files`` parses with ``datetime.fromisoformat`` and compares with ``datetime.now()``)
    and ``origin`` (``"upload"`` unless the record says ``"generated"``); ``expires_at`` becomes a
    naive local ISO string (``None``: never expires), as the bot's ``get_file`` and ``/files`` read
    it. ``size`` and ``created_at`` stay canonical (an int, an aware UTC datetime).
    """
    view = dict(record)
    view["origin"] = origin_of(view)
    if "size" in view:
        view["file_size"] = view["size"]
    view["uploaded_at"] = _local_string(view.get("created_at"))
    view["expires_at"] = _local_string(view.get("expires_at"))
    return view


class UserFilesMixin:
    """Mix into the bot's database handler (which sets ``self.db``).

    Class attributes a handler may override: ``user_files_root`` (the storage root whose files may
    be removed; ``None`` never removes files), ``user_files_collection``, and
    ``user_files_options`` (keyword arguments for ``AsyncUserFiles``; the environment applies
    otherwise, and ``legacy_timezone`` defaults to ``$USERFILES_LEGACY_TIMEZONE``, else this
    process's local zone: the zone the old bot wrote its naive strings in).

    Call ``init_user_files()`` in the handler's ``__init__``: settings that would make every call
    fail (``FILE_EXPIRATION_HOURS=0``, a bad ``MAX_FILES_PER_USER``, ...) then stop the bot at
    start-up with ``ConfigurationError`` instead of failing every upload.
    """

    db: Any
    user_files_root: str | Path | None = DEFAULT_ROOT
    user_files_collection: str = "user_files"
    user_files_options: Mapping[str, Any] = {}

    def init_user_files(self) -> AsyncUserFiles:
        """Build the handler's store now; raises ``ConfigurationError`` for invalid settings."""
        self.__dict__.pop("_user_files_store", None)
        return self.user_files

    @property
    def user_files(self) -> AsyncUserFiles:
        """The handler's ``AsyncUserFiles`` (built on first use, or by ``init_user_files``)."""
        store: AsyncUserFiles | None = self.__dict__.get("_user_files_store")
        if store is None:
            options = dict(self.user_files_options)
            if "legacy_timezone" not in options:
                options["legacy_timezone"] = default_legacy_timezone()
            store = AsyncUserFiles(self.db, collection=self.user_files_collection, **options)
            self.__dict__["_user_files_store"] = store
        return store

    async def _remove_files(self, records: list[dict[str, Any]]) -> list[str]:
        """Remove the files of ``records`` (gone from the database) unless a live record of the
        same user still refers to the same file, in whatever spelling (``//``, ``.``, ``..``, a
        symlinked directory); inside the root only. Never raises: a file left behind is found by
        the sweep."""
        if self.user_files_root is None or not records:
            return []
        users: dict[Any, list[dict[str, Any]]] = {}
        for record in records:
            if isinstance(record.get("file_path"), str):
                users.setdefault(record.get("user_id"), []).append(record)
        doomed: list[dict[str, Any]] = []
        try:
            for user_id, mine in users.items():
                live = await self.user_files.get_user_files(user_id)
                claimed = {_file_key(r["file_path"]) for r in live if isinstance(r.get("file_path"), str)}
                doomed += [r for r in mine if _file_key(r["file_path"]) not in claimed]
        except Exception:
            logger.exception("could not check which of %d file(s) are still in use; kept them", len(records))
            return []
        try:
            return remove_record_files(self.user_files_root, doomed)
        except Exception:
            logger.exception("removing the files of %d deleted record(s) failed", len(records))
            return []

    # -- reads -----------------------------------------------------------------------------------

    async def get_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """The user's live records, newest first, in the bot view (uploads and generated files).
        Raises when the database cannot answer: "no files" and "database down" differ."""
        return [bot_view(r) for r in await self.user_files.get_user_files(user_id)]

    async def list_user_files(self, user_id: int) -> list[dict[str, Any]]:
        """``/files`` and its dropdown: the same as ``get_user_files``."""
        return await self.get_user_files(user_id)

    async def get_user_file(self, file_id: str, user_id: int | None) -> dict[str, Any] | None:
        """The live record ``file_id`` in the bot view, only the owner's when ``user_id`` is given
        (the code interpreter's look-up and ``get_file_metadata``); ``None`` if absent, expired
        or another user's. Raises when the database cannot answer."""
        record = await self.user_files.get_file(file_id, user_id=user_id)
        return None if record is None else bot_view(record)

    async def count_user_files(self, user_id: int, origin: str = "upload") -> int:
        """How many live records of ``origin`` the user has (the upload message's "N/MAX": the
        limit holds per origin)."""
        files = await self.user_files.get_user_files(user_id)
        return sum(1 for f in files if origin_of(f) == origin)

    # -- writes ----------------------------------------------------------------------------------

    async def add_user_file(
        self, metadata: Mapping[str, Any], *, origin: str | None = None
    ) -> list[dict[str, Any]]:
        """The upload writer: save the record of a file just written at ``metadata["file_path"]``
        (the bot's metadata dict as it is, naive local strings included), keep the user within the
        limit of the record's origin, and remove the files of the records evicted (returned, in
        the bot view).

        ``origin``: ``"upload"`` (default) or ``"generated"`` (charts and outputs of the code
        interpreter: they never evict a user's uploads).

        Raises if the record was not saved, after removing the file just written (it has no record
        and never will), so the caller reports a failed upload; also if the record was evicted at
        once (older than the user's newest files up to the limit). ``ConfigurationError`` for a bad
        origin. A cancelled call leaves the file: the sweep removes it if no record claims it; so
        does a save the database did not answer in time (``DatabaseUnavailable`` after a call was
        sent), whose record may still be written.
        """
        data = dict(metadata)
        if origin is not None:
            if origin not in ORIGINS:
                raise ConfigurationError(f"origin must be one of {ORIGINS}, got {origin!r}")
            data["origin"] = origin
        return await self._save(data, new_file=True)

    async def _save(self, data: dict[str, Any], *, new_file: bool) -> list[dict[str, Any]]:
        try:
            evicted = await self.user_files.save_user_file(data)
        except SaveIncomplete as incomplete:
            # The record is saved; evicting older ones was cut short. The next save finishes it.
            logger.warning("upload %r saved, eviction interrupted: %s", data.get("file_id"), incomplete)
            evicted = list(incomplete.evicted)
        except Exception as exc:
            if new_file:
                await self._discard_upload(data, exc)
            raise
        await self._remove_files(evicted)
        if any(r.get("file_id") == data.get("file_id") for r in evicted):
            raise UserFilesError(
                f"file {data.get('file_id')!r} was removed at once: the user already has newer "
                "files of its kind up to the limit"
            )
        return [bot_view(r) for r in evicted]

    async def _discard_upload(self, data: Mapping[str, Any], error: Exception) -> None:
        if self.user_files_root is None or not isinstance(data.get("file_path"), str):
            return
        if isinstance(error, DatabaseUnavailable):
            if not isinstance(error.__cause__, ServerSelectionTimeoutError):
                # A call was sent and its answer did not come in time: the server may still write
                # the record (a frozen server runs it once resumed). Keep the file; the sweep
                # removes it after its grace period if no record claims it.
                logger.warning(
                    "upload %r: the database did not answer; kept its file in case the record was "
                    "written (the sweep removes it otherwise)",
                    data.get("file_id"),
                )
                return
            # No server was reached, so nothing was written; asking which paths are claimed would
            # wait another bound. The bot's upload path is new by construction (<file_id><ext>).
            claimed: set[str] = set()
        else:
            try:
                claimed = await self.user_files.claimed_paths(data["user_id"], [data["file_path"]])
            except Exception:
                # The database cannot say: the bot's upload path is new by construction
                # (<file_id><ext>, file_id unique per upload), so nothing else uses it.
                claimed = set()
        if data["file_path"] not in claimed:
            try:
                remove_record_files(self.user_files_root, [data])
            except Exception:
                logger.exception("could not remove %r after its record failed", data["file_path"])

    async def remove_user_file(self, file_id: str, user_id: int | None) -> dict[str, Any]:
        """The ``/files`` delete button and the bot's ``delete_file``: the user's own record, then
        its file. Returns the bot's dict: ``{"success": True, "message": ...}`` or
        ``{"success": False, "error": ...}`` (not found, another user's, database unavailable)."""
        try:
            record = await self.user_files.take_file(file_id, user_id=user_id)
        except Exception as exc:
            logger.exception("remove_user_file(%r, %r) failed", file_id, user_id)
            # A timed-out delete may still have happened on the server: say "try again", not "nothing".
            return {"success": False, "error": f"{UNAVAILABLE}; try again later ({type(exc).__name__})"}
        if record is None:
            return {"success": False, "error": "File not found or you don't have permission to delete it"}
        await self._remove_files([record])
        return {"success": True, "message": f"Deleted file: {record.get('filename', file_id)}"}

    async def reset_user_files(self, user_id: int) -> dict[str, Any]:
        """``/reset``: every record of the user, then their files. Returns the bot's dict
        (``success``, ``deleted_count``, ``failed_count``, ``message``; or ``error``)."""
        try:
            records = await self.user_files.delete_all_user_files(user_id)
        except Exception as exc:
            logger.exception("reset_user_files(%r) failed", user_id)
            return {
                "success": False,
                "error": f"{UNAVAILABLE}; try again later ({type(exc).__name__})",
                "deleted_count": 0,
            }
        removed = await self._remove_files(records)
        on_disk = [r for r in records if isinstance(r.get("file_path"), str)]
        failed = sum(1 for r in on_disk if os.path.lexists(r["file_path"]) and r["file_path"] not in removed)
        return {
            "success": True,
            "deleted_count": len(records),
            "failed_count": failed,
            "message": f"Deleted {len(records)} file(s)" + (f" ({failed} failed)" if failed else ""),
        }

    # -- the seed document's methods (signatures kept; errors raise instead of being swallowed) --

    async def save_user_file(self, file_data: dict[str, Any]) -> None:
        """Upsert a record (the bot's writer dict or the seed's shape); evicted records' files
        are removed. Raises if it was not saved; unlike ``add_user_file`` (the upload writer) it
        never removes the record's file, which may belong to an existing record."""
        await self._save(dict(file_data), new_file=False)

    async def delete_user_file(self, file_id: str, user_id: int | None = None) -> bool:
        """Delete the record ``file_id`` (only the owner's when ``user_id`` is given), then its
        file; ``False`` if there was none. Raises when the database cannot answer."""
        record = await self.user_files.take_file(file_id, user_id=user_id)
        if record is None:
            return False
        await self._remove_files([record])
        return True

    async def delete_expired_files(self) -> int:
        """Delete records past expiry (the TTL index does it too); how many. Their files are left
        to the sweep, which also removes those of records the TTL monitor deleted."""
        return await self.user_files.delete_expired_files()
