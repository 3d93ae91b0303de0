"""Convert the bot's legacy records: ISO-string dates to dates, file_size to size, uploaded_at to created_at.

Runs on the server in _id batches (option batch_size, default 5000), resumable if killed; naive
strings are read in option legacy_timezone (default UTC). Values that cannot be converted are left
as they are and counted; no record is deleted. On a new database there is nothing to convert.
"""

from __future__ import annotations

from typing import Any

from userfiles_db.migrate import steps

NAME = "user_files"


def up(db: Any) -> None:
    steps.convert_legacy_records(db, NAME)


def down(db: Any) -> None:
    # Back to the legacy shape the old bot reads (dates keep millisecond precision only).
    steps.revert_to_legacy_records(db, NAME)
