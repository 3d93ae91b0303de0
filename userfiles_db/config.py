"""Settings of the query module: arguments first, then the environment, then the defaults."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from userfiles_db.errors import ConfigurationError

EXPIRATION_ENV = "FILE_EXPIRATION_HOURS"
MAX_FILES_ENV = "MAX_FILES_PER_USER"
DEFAULT_EXPIRATION_HOURS = 48.0
DEFAULT_MAX_FILES_PER_USER = 20
NEVER_EXPIRE = -1


@dataclass(frozen=True)
class Settings:
    """Validated settings. ``expiration_hours`` is ``None`` when files never expire."""

    expiration_hours: float | None
    max_files_per_user: int


def _parse_expiration(value: object, source: str) -> float | None:
    if isinstance(value, bool):
        raise ConfigurationError(f"{source} must be a number of hours or -1, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"{source} must be a number of hours or -1 (never expire), got {value!r}"
            ) from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigurationError(f"{source} must be a number of hours or -1, got {value!r}")
    if value == NEVER_EXPIRE:
        return None
    if value <= 0:
        raise ConfigurationError(f"{source} must be greater than 0, or -1 to never expire, got {value!r}")
    return float(value)


def _parse_max_files(value: object, source: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"{source} must be a whole number of at least 1, got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{source} must be a whole number of at least 1, got {value!r}")
    return value


def resolve_settings(
    expiration_hours: float | None = None,
    max_files_per_user: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Settings from the arguments, else the environment, else the defaults (48 h, 20 files).

    Raises ``ConfigurationError`` naming the setting when a value is invalid.
    """
    env = os.environ if environ is None else environ
    if expiration_hours is not None:
        hours = _parse_expiration(expiration_hours, "expiration_hours")
    elif env.get(EXPIRATION_ENV, "").strip():
        hours = _parse_expiration(env[EXPIRATION_ENV], EXPIRATION_ENV)
    else:
        hours = DEFAULT_EXPIRATION_HOURS
    if max_files_per_user is not None:
        max_files = _parse_max_files(max_files_per_user, "max_files_per_user")
    elif env.get(MAX_FILES_ENV, "").strip():
        max_files = _parse_max_files(env[MAX_FILES_ENV], MAX_FILES_ENV)
    else:
        max_files = DEFAULT_MAX_FILES_PER_USER
    return Settings(expiration_hours=hours, max_files_per_user=max_files)
