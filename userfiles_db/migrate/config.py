"""Where ``migrate.py`` gets its settings: flags beat the environment, which beats the file."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pymongo.uri_parser import parse_uri

from userfiles_db.migrate.engine import EngineOptions
from userfiles_db.migrate.errors import ConfigError

DEFAULT_DB = "chatgpt_discord_bot"
DEFAULT_CONFIG = "migrate.yaml"
URI_ENV = "MONGODB_URI"
DB_ENV = "MONGODB_DB"
_ENGINE_KEYS = {
    "changelog_collection", "lock_collection", "lock_lease_seconds", "lock_timeout_seconds",
    "lock_poll_seconds", "transactions", "migration_options",
}  # fmt: skip
_FILE_KEYS = _ENGINE_KEYS | {"uri", "db", "migrations", "server_timeout_seconds"}


@dataclass(frozen=True)
class Settings:
    uri: str | None  # None: no URI anywhere (migrate.py then uses an embedded local server)
    db: str
    migrations: Path
    engine: EngineOptions
    server_timeout_seconds: float = 5.0


def bundled_migrations() -> Path:
    """The migrations shipped with the package (the repository's ``migrations/``)."""
    return Path(str(resources.files("userfiles_db.bundled_migrations")))


def redact(text: str, uri: str | None = None) -> str:
    """``text`` with the password of any MongoDB URI in it (and ``uri``'s password) masked."""
    text = re.sub(r"(mongodb(?:\+srv)?://[^:/@\s]+:)[^@\s]*@", r"\1***@", text)
    if uri:
        try:
            password = parse_uri(uri, warn=True).get("password")
        except Exception:  # an invalid URI: the regex above already masked what it could
            password = None
        if password:
            text = text.replace(password, "***")
    return text


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse ``migrate.yaml`` with ``yaml.safe_load``; raises ``ConfigError`` naming the file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping of settings")
    unknown = sorted(set(raw) - _FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"config file {str(path)!r}: unknown setting(s) {unknown}; known: {sorted(_FILE_KEYS)}"
        )
    return raw


def resolve(
    *,
    uri: str | None = None,
    db: str | None = None,
    config: str | None = None,
    migrations: str | None = None,
    environ: Mapping[str, str],
    cwd: Path,
) -> Settings:
    """Settings from flags, then ``MONGODB_URI`` / ``MONGODB_DB``, then the config file (``--config``
    or ``./migrate.yaml`` when present); the database falls back to the URI's, then
    ``chatgpt_discord_bot``. Raises ``ConfigError``."""
    if config is not None:
        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"config file {config!r} does not exist")
        file = read_config_file(path)
    elif (cwd / DEFAULT_CONFIG).is_file():
        path = cwd / DEFAULT_CONFIG
        file = read_config_file(path)
    else:
        path, file = cwd / DEFAULT_CONFIG, {}
    chosen_uri = uri or environ.get(URI_ENV) or file.get("uri") or None
    if chosen_uri is not None and not isinstance(chosen_uri, str):
        raise ConfigError(f"uri must be a string, got {chosen_uri!r}")
    uri_db = None
    if chosen_uri:
        try:
            uri_db = parse_uri(chosen_uri, warn=True).get("database")
        except Exception as exc:
            raise ConfigError(
                f"invalid MongoDB URI {redact(chosen_uri, chosen_uri)!r}: {redact(str(exc), chosen_uri)}"
            ) from None
    chosen_db = db or environ.get(DB_ENV) or file.get("db") or uri_db or DEFAULT_DB
    folder = migrations or file.get("migrations")
    if folder is None:
        migrations_dir = bundled_migrations()
    else:
        migrations_dir = Path(str(folder))
        if not migrations_dir.is_absolute() and migrations is None:
            migrations_dir = path.parent / migrations_dir  # relative to the config file
    engine_settings = {key: file[key] for key in _ENGINE_KEYS if key in file}
    options = engine_settings.get("migration_options", {})
    if not isinstance(options, dict):
        raise ConfigError(f"migration_options must be a mapping, got {options!r}")
    try:
        engine = EngineOptions(**engine_settings)
    except TypeError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc}") from None
    timeout = file.get("server_timeout_seconds", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"server_timeout_seconds must be a positive number, got {timeout!r}")
    return Settings(chosen_uri, str(chosen_db), migrations_dir, engine, float(timeout))
