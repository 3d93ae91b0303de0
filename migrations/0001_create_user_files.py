"""Create user_files, or adopt the bot's: collection, validator (warn only), indexes, no TTL yet.

The validator only warns for now, so the bot's current writer (dates as strings, file_size,
uploaded_at) keeps working while the rollout is under way; 0004 makes it strict. The plain
expires_at_1 index is the bot's own, so the bot's startup create_index calls still succeed until
0003 turns it into the TTL index.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from userfiles_db.migrate import steps
from userfiles_db.schema import load_schema

SCHEMA = load_schema("user_files", version=1)
NAME = SCHEMA.collection


def up(db: Any) -> None:
    steps.ensure_collection(db, NAME)
    steps.ensure_validator(db, NAME, SCHEMA.validator, level="moderate", action="warn")
    steps.ensure_index(db, NAME, SCHEMA.index("file_id_1"))
    steps.ensure_index(db, NAME, SCHEMA.index("user_id_1_expires_at_-1"))
    if "expires_at_1" not in db[NAME].index_information():
        plain = replace(SCHEMA.index("expires_at_1"), expire_after_seconds=None)
        steps.ensure_index(db, NAME, plain)


def down(db: Any) -> None:
    # The collection, its records and its indexes stay: the bot uses them without the toolkit,
    # and a down migration never drops data.
    steps.remove_validator(db, NAME)
