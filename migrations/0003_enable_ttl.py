"""Turn expires_at_1 into the TTL index in place (collMod), after converting stragglers.

Run after the bot stopped creating its indexes at startup: its plain create_index("expires_at")
fails with code 85 once the index carries a TTL. Records the old bot wrote since 0002 are converted
first; then counts of non-date expiries (never deleted) and of records already past expiry (deleted
in a burst) are reported before the TTL goes on.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from userfiles_db.migrate import steps
from userfiles_db.schema import load_schema

SCHEMA = load_schema("user_files", version=1)
NAME = SCHEMA.collection


def up(db: Any) -> None:
    steps.convert_legacy_records(db, NAME)
    steps.ensure_index(db, NAME, SCHEMA.index("expires_at_1"))


def down(db: Any) -> None:
    # collMod cannot remove a TTL: the index is rebuilt as the plain one the old bot creates.
    plain = replace(SCHEMA.index("expires_at_1"), expire_after_seconds=None)
    steps.ensure_index(db, NAME, plain, allow_rebuild=True)
