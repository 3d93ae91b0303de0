"""Make the user_files validator strict: writes that break schema v1 are rejected (code 121).

The final tightening step of the rollout: run it once no writer uses the legacy shape any more.
Existing records are not re-checked by the server; the number that fail the schema is reported.
"""

from __future__ import annotations

from typing import Any

from userfiles_db.migrate import context, steps
from userfiles_db.schema import load_schema

SCHEMA = load_schema("user_files", version=1)
NAME = SCHEMA.collection


def up(db: Any) -> None:
    steps.ensure_validator(
        db, NAME, SCHEMA.validator, level=SCHEMA.validation_level, action=SCHEMA.validation_action
    )
    invalid = steps.count_invalid(db, NAME, SCHEMA.validator)
    if invalid:
        context().report(
            f"  warning: {invalid} existing record(s) fail the schema; updates to them will be "
            "rejected until they are fixed"
        )


def down(db: Any) -> None:
    steps.ensure_validator(db, NAME, SCHEMA.validator, level="moderate", action="warn")
