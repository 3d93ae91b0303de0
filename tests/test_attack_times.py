"""Adversarial tests (helper attack1): the old bot's naive strings at the awkward wall times of
zones whose DST changes at midnight (23:30 is shown twice, 00:30 never), read by the store before
the contract and converted by migration 0002: the same instant, so a file live for the one is
live for the other."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pymongo.database import Database

from userfiles_db.migrate.steps import convert_legacy_records
from userfiles_db.records import LegacyTime

# 2026: Santiago falls back at 24:00 on 4 April (23:00-24:00 twice) and springs forward at 24:00
# on 5 September (00:00-01:00 missing); Beirut falls back at 24:00 on 24 October; Havana springs
# forward at 00:00 on 8 March and falls back at 01:00 on 1 November (00:00-01:00 twice).
CASES = {
    "America/Santiago": [
        "2026-04-04T23:30:00.123456",
        "2026-04-04T23:00:00",
        "2026-09-06T00:30:00",
        "2026-09-06",
    ],
    "Asia/Beirut": ["2026-10-24T23:30:00.5", "2026-10-24T23:59:59.999999"],
    "America/Havana": ["2026-03-08T00:30:00", "2026-10-31T23:30:00", "2026-11-01T00:30:00"],
}


@pytest.mark.parametrize("zone", sorted(CASES))
def test_migration_0002_and_the_store_read_midnight_dst_times_alike(
    real_db: Database[Any], zone: str
) -> None:
    coll = real_db["user_files"]
    for n, text in enumerate(CASES[zone]):
        coll.insert_one(
            {
                "file_id": f"f{n}",
                "user_id": 1,
                "filename": "a.csv",
                "file_type": "csv",
                "file_path": "/x/a.csv",
                "file_size": 1,
                "uploaded_at": text,
                "expires_at": text,
            }
        )
    convert_legacy_records(real_db, "user_files", timezone=zone)
    legacy = LegacyTime.named(zone)
    for n, text in enumerate(CASES[zone]):
        doc = coll.find_one({"file_id": f"f{n}"})
        assert doc is not None
        reading = legacy.read(text)
        assert reading is not None, text
        converted = doc["expires_at"].replace(tzinfo=dt.timezone.utc)
        assert abs(converted - reading.moment) < dt.timedelta(milliseconds=1), (text, converted, reading)
        assert reading.earliest <= converted <= reading.latest
