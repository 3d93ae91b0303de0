"""Settings: arguments, then environment, then defaults; invalid values are clear errors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pymongo.database import Database

from userfiles_db import ConfigurationError, UserFiles
from userfiles_db.config import resolve_settings


def test_defaults_are_48_hours_and_20_files() -> None:
    settings = resolve_settings(environ={})
    assert settings.expiration_hours == 48
    assert settings.max_files_per_user == 20


def test_environment_is_read_and_minus_one_means_never() -> None:
    settings = resolve_settings(environ={"FILE_EXPIRATION_HOURS": "-1", "MAX_FILES_PER_USER": "5"})
    assert settings.expiration_hours is None
    assert settings.max_files_per_user == 5


def test_arguments_beat_the_environment() -> None:
    env = {"FILE_EXPIRATION_HOURS": "-1", "MAX_FILES_PER_USER": "5"}
    settings = resolve_settings(expiration_hours=2, max_files_per_user=3, environ=env)
    assert (settings.expiration_hours, settings.max_files_per_user) == (2, 3)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FILE_EXPIRATION_HOURS": "soon"},
            "FILE_EXPIRATION_HOURS must be a number of hours or -1",
        ),
        ({"FILE_EXPIRATION_HOURS": "0"}, "FILE_EXPIRATION_HOURS must be greater than 0"),
        ({"FILE_EXPIRATION_HOURS": "-5"}, "FILE_EXPIRATION_HOURS must be greater than 0"),
        ({"FILE_EXPIRATION_HOURS": "nan"}, "FILE_EXPIRATION_HOURS must be a number"),
        ({"MAX_FILES_PER_USER": "0"}, "MAX_FILES_PER_USER must be a whole number of at least 1"),
        ({"MAX_FILES_PER_USER": "2.5"}, "MAX_FILES_PER_USER must be a whole number"),
    ],
)
def test_invalid_environment_is_a_clear_error_at_construction(
    mock_db: Database[Any], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=message):
        UserFiles(mock_db)


@pytest.mark.parametrize(
    "options",
    [{"expiration_hours": 0}, {"expiration_hours": True}, {"max_files_per_user": 0},
     {"max_files_per_user": 1.5}],
)  # fmt: skip
def test_invalid_arguments_are_refused(mock_db: Database[Any], options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(options))):
        UserFiles(mock_db, **options)


def test_a_naive_clock_is_refused(mock_db: Database[Any]) -> None:
    store = UserFiles(mock_db, clock=lambda: dt.datetime(2030, 1, 1))
    with pytest.raises(TypeError, match="aware datetime"):
        store.get_user_files(1)
