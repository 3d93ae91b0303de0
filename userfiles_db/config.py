"""Settings of the query module: arguments first, then the environment, then the defaults.

Every value is checked here, at construction: a setting that would make every call fail (an
expiry of 0 hours, an expiry so far away that the date cannot be stored, a timeout of 0) is a
``ConfigurationError`` naming the setting, never an error on each call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from userfiles_db.errors import ConfigurationError

EXPIRATION_ENV = "FILE_EXPIRATION_HOURS"
MAX_FILES_ENV = "MAX_FILES_PER_USER"
MAX_GENERATED_ENV = "MAX_GENERATED_FILES_PER_USER"
TIMEOUT_ENV = "USERFILES_TIMEOUT_SECONDS"
WRITE_SHAPE_ENV = "USERFILES_WRITE_SHAPE"
DEFAULT_EXPIRATION_HOURS: float | None = 48.0
DEFAULT_MAX_FILES_PER_USER = 20
DEFAULT_TIMEOUT_SECONDS = 5.0
NEVER_EXPIRE = -1
MAX_EXPIRATION_HOURS = 24 * 365 * 1000
"""1000 years: ``now + hours`` stays a date Python and BSON can represent (year 9999 at most)."""
MAX_TIMEOUT_SECONDS = 3600.0
# Below this no call can complete (a loopback round trip plus the driver's checks): a bound that
# small would make every call fail, so it is refused at construction like the other settings.
MIN_TIMEOUT_SECONDS = 0.05
MAX_FILES_LIMIT = 100_000
WriteShape = Literal["canonical", "legacy"]
V = TypeVar("V")
WRITE_SHAPES: tuple[WriteShape, ...] = ("canonical", "legacy")


@dataclass(frozen=True)
class Settings:
    """Validated settings. ``expiration_hours`` is ``None`` when files never expire.

    ``max_files_per_user`` bounds a user's uploads, ``max_generated_files_per_user`` their
    generated files (``origin: "generated"``); ``None`` there means "same as uploads".
    """

    expiration_hours: float | None
    max_files_per_user: int
    max_generated_files_per_user: int | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    write_shape: WriteShape = "canonical"

    def limit_for(self, origin: str) -> int:
        """The per-user limit of records of ``origin`` ("upload" or "generated")."""
        if origin == "generated" and self.max_generated_files_per_user is not None:
            return self.max_generated_files_per_user
        return self.max_files_per_user


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
        raise ConfigurationError(
            f"{source} must be greater than 0, or -1 to never expire, got {value!r} "
            "(0 would make every file expire at once)"
        )
    if value > MAX_EXPIRATION_HOURS:
        raise ConfigurationError(
            f"{source} must be at most {MAX_EXPIRATION_HOURS} hours (1000 years) so expiry dates "
            f"stay storable; use -1 to never expire, got {value!r}"
        )
    return float(value)


def _parse_count(value: object, source: str) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"{source} must be a whole number of at least 1, got {value!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{source} must be a whole number of at least 1, got {value!r}")
    if value > MAX_FILES_LIMIT:
        raise ConfigurationError(f"{source} must be at most {MAX_FILES_LIMIT}, got {value!r}")
    return value


def _parse_timeout(value: object, source: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigurationError(
                f"{source} must be a number of seconds greater than 0 (for example 5), got {value!r}"
            ) from None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < MIN_TIMEOUT_SECONDS
        or value > MAX_TIMEOUT_SECONDS
    ):
        raise ConfigurationError(
            f"{source} must be a number of seconds from {MIN_TIMEOUT_SECONDS:g} to {MAX_TIMEOUT_SECONDS:g} "
            f"(for example 5), got {value!r}"
        )
    return float(value)


def _parse_write_shape(value: object, source: str) -> WriteShape:
    text = value.strip().lower() if isinstance(value, str) else value
    for shape in WRITE_SHAPES:
        if text == shape:
            return shape
    raise ConfigurationError(f"{source} must be 'canonical' or 'legacy', got {value!r}")


def resolve_settings(
    expiration_hours: float | None = None,
    max_files_per_user: int | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    max_generated_files_per_user: int | None = None,
    timeout_seconds: float | None = None,
    write_shape: str | None = None,
) -> Settings:
    """Settings from the arguments, else the environment, else the defaults (48 h, 20 files,
    generated files as many as uploads, 5 s, canonical writes).

    Raises ``ConfigurationError`` naming the setting when a value is invalid.
    """
    env = os.environ if environ is None else environ

    def resolve(
        argument: object, arg_name: str, env_name: str, parse: Callable[[object, str], V], default: V
    ) -> V:
        if argument is not None:
            return parse(argument, arg_name)
        if env.get(env_name, "").strip():
            return parse(env[env_name], env_name)
        return default

    return Settings(
        expiration_hours=resolve(
            expiration_hours, "expiration_hours", EXPIRATION_ENV, _parse_expiration, DEFAULT_EXPIRATION_HOURS
        ),
        max_files_per_user=resolve(
            max_files_per_user, "max_files_per_user", MAX_FILES_ENV, _parse_count, DEFAULT_MAX_FILES_PER_USER
        ),
        max_generated_files_per_user=resolve(
            max_generated_files_per_user,
            "max_generated_files_per_user",
            MAX_GENERATED_ENV,
            _parse_count,
            None,
        ),
        timeout_seconds=resolve(
            timeout_seconds, "timeout_seconds", TIMEOUT_ENV, _parse_timeout, DEFAULT_TIMEOUT_SECONDS
        ),
        write_shape=resolve(write_shape, "write_shape", WRITE_SHAPE_ENV, _parse_write_shape, "canonical"),
    )
