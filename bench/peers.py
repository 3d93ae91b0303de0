"""The ODMs a user would pick instead: Beanie, MongoEngine, ODMantic, side by side with the store.

Each peer runs "the live files of a user, newest first" with the live filter written by hand (so
its results are the store's, compared by file_id before timing) and the save-with-limit path as
its idiomatic count-evict-insert. Without the hand-written filter each returns what the lagging
TTL monitor has not deleted yet: counted. Needs the ``bench`` extra; a peer that is not installed
is reported as such.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from pymongo import AsyncMongoClient, MongoClient
from pymongo.database import Database

from userfiles_db import AsyncUserFiles, UserFiles
from userfiles_db.clock import UTC

LIMIT = 5  # the users have 7 or 8 live files: every save evicts


def _module(name: str) -> Any:
    """A peer's module, untyped: the bench extra may be absent where mypy runs."""
    return importlib.import_module(name)


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


def _live(now: dt.datetime) -> dict[str, Any]:
    return {"$or": [{"expires_at": None}, {"expires_at": {"$gt": now}}]}


def _new_file(user: int, n: int) -> dict[str, Any]:
    file_id = f"{user}_peer_{n:08x}"
    return {
        "file_id": file_id,
        "user_id": user,
        "filename": "new.csv",
        "file_type": "csv",
        "file_path": f"/tmp/bot_code_interpreter/user_files/{user}/{file_id}.csv",
        "size": 1,
    }


# ---------------------------------------------------------------------------------------------
# MongoEngine (sync)


def mongoengine_peer(uri: str, db_name: str, collection: str) -> dict[str, Callable[..., Any]]:
    me = _module("mongoengine")

    alias = f"bench_{collection}"
    me.connect(db=db_name, host=uri, alias=alias)

    document: Any = me.Document

    class UserFile(document):  # type: ignore[misc]
        meta: ClassVar[dict[str, Any]] = {
            "collection": collection,
            "db_alias": alias,
            "strict": False,
            "auto_create_index": False,
        }
        file_id = me.StringField(required=True)
        user_id = me.IntField(required=True)
        filename = me.StringField()
        file_type = me.StringField()
        file_path = me.StringField()
        size = me.IntField()
        created_at = me.DateTimeField()
        expires_at = me.DateTimeField(null=True)

    def get(user: int) -> list[str]:
        now = _now()
        query = (
            UserFile.objects(user_id=user)
            .filter(me.Q(expires_at=None) | me.Q(expires_at__gt=now))
            .order_by("-created_at", "-file_id")
        )
        return [doc.file_id for doc in query]

    def get_unfiltered(user: int) -> list[Any]:
        return [(doc.file_id, doc.expires_at) for doc in UserFile.objects(user_id=user)]

    def save(data: dict[str, Any]) -> None:
        now = _now()
        mine = UserFile.objects(user_id=data["user_id"]).filter(
            me.Q(expires_at=None) | me.Q(expires_at__gt=now)
        )
        over = mine.count() - LIMIT + 1
        if over > 0:
            for old in mine.order_by("created_at", "file_id").limit(over):
                old.delete()
        UserFile(**data, created_at=now, expires_at=now + dt.timedelta(hours=48)).save()

    return {"get": get, "get_unfiltered": get_unfiltered, "save": save, "close": lambda: me.disconnect(alias)}


# ---------------------------------------------------------------------------------------------
# Beanie (async, on PyMongo's AsyncMongoClient)


async def beanie_peer(client: AsyncMongoClient[Any], db_name: str, collection: str) -> dict[str, Any]:
    beanie = _module("beanie")
    operators = _module("beanie.operators")
    GT, Eq, Or = operators.GT, operators.Eq, operators.Or

    document: Any = beanie.Document

    class UserFile(document):  # type: ignore[misc]
        file_id: str
        user_id: int
        filename: str
        file_type: str
        file_path: str
        size: int
        created_at: dt.datetime
        expires_at: dt.datetime | None = None

        class Settings:
            name = collection

    F: Any = UserFile  # the model, untyped: its fields are query expressions
    await beanie.init_beanie(database=client[db_name], document_models=[UserFile])

    async def get(user: int) -> list[str]:
        now = _now()
        docs = (
            await F.find(F.user_id == user, Or(Eq(F.expires_at, None), GT(F.expires_at, now)))
            .sort(-F.created_at, -F.file_id)
            .to_list()
        )
        return [doc.file_id for doc in docs]

    async def get_unfiltered(user: int) -> list[Any]:
        return [(doc.file_id, doc.expires_at) for doc in await F.find(F.user_id == user).to_list()]

    async def save(data: dict[str, Any]) -> None:
        now = _now()
        mine = F.find(
            F.user_id == data["user_id"],
            Or(Eq(F.expires_at, None), GT(F.expires_at, now)),
        )
        over = await mine.count() - LIMIT + 1
        if over > 0:
            oldest = F.find(
                F.user_id == data["user_id"],
                Or(Eq(F.expires_at, None), GT(F.expires_at, now)),
            ).sort(+F.created_at, +F.file_id)
            for old in await oldest.limit(over).to_list():
                await old.delete()
        await UserFile(**data, created_at=now, expires_at=now + dt.timedelta(hours=48)).insert()

    return {"get": get, "get_unfiltered": get_unfiltered, "save": save}


# ---------------------------------------------------------------------------------------------
# ODMantic (async, on Motor)


def odmantic_peer(uri: str, db_name: str, collection: str) -> dict[str, Any]:
    odmantic = _module("odmantic")
    AIOEngine, query = odmantic.AIOEngine, odmantic.query
    model: Any = odmantic.Model
    AsyncIOMotorClient = _module("motor.motor_asyncio").AsyncIOMotorClient

    class UserFile(model):  # type: ignore[misc]
        model_config: ClassVar[dict[str, Any]] = {"collection": collection, "extra": "ignore"}
        file_id: str
        user_id: int
        filename: str
        file_type: str
        file_path: str
        size: int
        created_at: dt.datetime
        expires_at: dt.datetime | None = None

    F: Any = UserFile  # the model, untyped: its fields are query expressions
    client: Any = AsyncIOMotorClient(uri, maxPoolSize=100)
    engine = AIOEngine(client=client, database=db_name)

    def live(now: dt.datetime) -> Any:
        return query.or_(F.expires_at == None, F.expires_at > now)  # noqa: E711

    async def get(user: int) -> list[str]:
        now = _now()
        docs = await engine.find(
            UserFile, F.user_id == user, live(now),
            sort=(query.desc(F.created_at), query.desc(F.file_id)),
        )  # fmt: skip
        return [doc.file_id for doc in docs]

    async def get_unfiltered(user: int) -> list[Any]:
        return [(doc.file_id, doc.expires_at) for doc in await engine.find(UserFile, F.user_id == user)]

    async def save(data: dict[str, Any]) -> None:
        now = _now()
        over = await engine.count(UserFile, F.user_id == data["user_id"], live(now)) - LIMIT + 1
        if over > 0:
            oldest = await engine.find(
                UserFile, F.user_id == data["user_id"], live(now),
                sort=(query.asc(F.created_at), query.asc(F.file_id)), limit=over,
            )  # fmt: skip
            for old in oldest:
                await engine.delete(old)
        await engine.save(UserFile(**data, created_at=now, expires_at=now + dt.timedelta(hours=48)))

    return {"get": get, "get_unfiltered": get_unfiltered, "save": save, "close": client.close}


# ---------------------------------------------------------------------------------------------
# Measurements


def _sync_ratio(
    ours: Callable[[Any], Any], theirs: Callable[[Any], Any], args: list[Any]
) -> tuple[float, float]:
    """Calls per second of each, alternating call by call over the same arguments."""
    spent = [0.0, 0.0]
    for i, arg in enumerate(args):
        pair = [(0, ours), (1, theirs)]
        for side, fn in pair if i % 2 else pair[::-1]:
            start = time.perf_counter()
            fn(arg)
            spent[side] += time.perf_counter() - start
    return len(args) / spent[0], len(args) / spent[1]


async def _async_ratio(
    ours: Callable[[Any], Awaitable[Any]], theirs: Callable[[Any], Awaitable[Any]], batches: list[list[Any]]
) -> tuple[float, float]:
    """Calls per second of each, 100 in flight, alternating batch by batch."""
    spent = [0.0, 0.0]
    count = 0
    for i, batch in enumerate(batches):
        count += len(batch)
        pair = [(0, ours), (1, theirs)]
        for side, fn in pair if i % 2 else pair[::-1]:
            start = time.perf_counter()
            await asyncio.gather(*(fn(arg) for arg in batch))
            spent[side] += time.perf_counter() - start
    return count / spent[0], count / spent[1]


def prepare_collections(db: Database[Any], names: list[str], users: int) -> None:
    """Copies of the first ``users`` users of ``user_files`` (same indexes), one per side."""
    from bench.run import bot_indexes

    for name in names:
        db.drop_collection(name)
        db["user_files"].aggregate([{"$match": {"user_id": {"$lt": 10**17 + users}}}, {"$out": name}])
        bot_indexes(db[name])


def bench_peers(table: Any, uri: str, db_name: str, users: int, calls: int) -> None:
    """Rows: get and save throughput of each peer vs the store, and expired records returned."""
    client: MongoClient[dict[str, Any]]
    with MongoClient(uri) as client:
        db: Database[Any] = client[db_name]
        rng = random.Random(11)
        get_users = [10**17 + rng.randrange(users) for _ in range(calls)]
        save_users = [10**17 + rng.randrange(min(users, 2000)) for _ in range(calls // 4)]
        peers = ["mongoengine", "beanie", "odmantic"]
        prepare_collections(db, [f"peer_{p}_{side}" for p in peers for side in ("ours_save", "save")], 2000)
        for peer in peers:
            try:
                _bench_one(table, peer, uri, db, get_users, save_users)
            except ImportError as exc:
                table.add(f"{peer}: not installed ({exc.name}); install the bench extra", "", "")
        for name in db.list_collection_names():
            if name.startswith("peer_"):
                db.drop_collection(name)


def _bench_one(
    table: Any, peer: str, uri: str, db: Database[Any], get_users: list[int], save_users: list[int]
) -> None:
    names = {side: f"peer_{peer}_{side}" for side in ("ours_save", "save")}
    if peer == "mongoengine":
        impl = mongoengine_peer(uri, db.name, "user_files")
        save_impl = mongoengine_peer(uri, db.name, names["save"])
        store = UserFiles(db, max_files_per_user=100)
        saver = UserFiles(db, collection=names["ours_save"], max_files_per_user=LIMIT)
        if [r["file_id"] for r in store.get_user_files(get_users[0])] != impl["get"](get_users[0]):
            raise AssertionError("mongoengine: results differ from the store's")
        ours_rate, their_rate = _sync_ratio(store.get_user_files, impl["get"], get_users)
        n = iter(range(10**9))
        ours_save, their_save = _sync_ratio(
            lambda u: saver.save_user_file(_new_file(u, next(n))),
            lambda u: save_impl["save"](_new_file(u, next(n))),
            save_users,
        )  # fmt: skip
        expired = _count_expired(impl["get_unfiltered"], get_users[:500])
        impl["close"]()
        save_impl["close"]()
        _rows(table, "MongoEngine (sync)", ours_rate, their_rate, ours_save, their_save, expired, 500)
        return

    async def run() -> tuple[float, float, float, float, int]:
        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, maxPoolSize=100)
        adb: Any = client[db.name]
        motor: Any = None
        if peer == "odmantic":
            # ODMantic runs on Motor (PyMongo in a thread pool): the store runs on Motor too, so
            # the row compares the libraries, not the drivers.
            motor = _module("motor.motor_asyncio").AsyncIOMotorClient(uri, maxPoolSize=100)
            adb = motor[db.name]
        store = AsyncUserFiles(adb, max_files_per_user=100)
        saver = AsyncUserFiles(adb, collection=names["ours_save"], max_files_per_user=LIMIT)
        if peer == "beanie":
            impl = await beanie_peer(client, db.name, "user_files")
            # A second init_beanie would rebind the model: the save side gets its own client.
            save_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri, maxPoolSize=100)
            save_impl = await beanie_peer(save_client, db.name, names["save"])
        else:
            impl = odmantic_peer(uri, db.name, "user_files")
            save_impl = odmantic_peer(uri, db.name, names["save"])
        first = get_users[0]
        if [r["file_id"] for r in await store.get_user_files(first)] != await impl["get"](first):
            raise AssertionError(f"{peer}: results differ from the store's")
        batches = [get_users[i : i + 100] for i in range(0, len(get_users), 100)]
        ours_rate, their_rate = await _async_ratio(store.get_user_files, impl["get"], batches)
        n = iter(range(10**9))
        # Saves: one user per batch slot, so the count-evict-insert of one save does not race another's.
        save_batches = [sorted(set(save_users[i : i + 50])) for i in range(0, len(save_users), 50)]

        async def ours_save(u: int) -> Any:
            return await saver.save_user_file(_new_file(u, next(n)))

        async def their_save(u: int) -> Any:
            return await save_impl["save"](_new_file(u, next(n)))

        ours_s, their_s = await _async_ratio(ours_save, their_save, save_batches)
        expired = 0
        for u in get_users[:500]:
            expired += sum(
                1 for _, exp in await impl["get_unfiltered"](u) if exp is not None and _aware(exp) <= _now()
            )
        await client.close()
        if peer == "beanie":
            await save_client.close()
        else:
            impl["close"]()
            save_impl["close"]()
            motor.close()
        return ours_rate, their_rate, ours_s, their_s, expired

    ours_rate, their_rate, ours_s, their_s, expired = asyncio.run(run())
    label = (
        "Beanie (async, 100 in flight)" if peer == "beanie" else "ODMantic (async on Motor, 100 in flight)"
    )
    _rows(table, label, ours_rate, their_rate, ours_s, their_s, expired, 500)


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _count_expired(get_unfiltered: Callable[[int], list[Any]], users: list[int]) -> int:
    now = _now()
    return sum(1 for u in users for _, exp in get_unfiltered(u) if exp is not None and _aware(exp) <= now)


def _rows(
    table: Any,
    label: str,
    ours: float,
    theirs: float,
    ours_save: float,
    their_save: float,
    expired: int,
    users: int,
) -> None:
    table.add(
        f"{label}: live files of a user, newest first (filter by hand)",
        f"{ours:,.0f}/s", f"{theirs:,.0f}/s", f"{ours / theirs:.2f}x", "faster", ours > theirs,
    )  # fmt: skip
    table.add(
        f"{label}: save at the limit ({LIMIT}, evicts) vs count-evict-insert",
        f"{ours_save:,.0f}/s", f"{their_save:,.0f}/s", f"{ours_save / their_save:.2f}x", "faster",
        ours_save > their_save,
    )  # fmt: skip
    table.add(
        f"{label}: expired records returned WITHOUT the hand-written filter ({users} users)",
        "0", str(expired), "", "reported",
    )  # fmt: skip
