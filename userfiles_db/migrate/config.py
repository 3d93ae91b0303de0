"""Where ``migrate.py`` (and the sweep) get their settings.

Every setting is declared here with its type. Precedence: flags, then the environment
(``USERFILES_<NAME>``; ``MONGODB_URI`` and ``MONGODB_DB`` are read too), then the config file
(``--config``, ``$USERFILES_CONFIG``, else ``migrate.yaml`` or ``[tool.userfiles_db]`` in
``pyproject.toml``, looked up from the working directory upwards), then the defaults.

The database is never taken from the URI's path: the bot uses ``chatgpt_discord_bot`` whatever
its URI names (Atlas URIs carry ``/myFirstDatabase`` for authentication only).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import yaml

from userfiles_db.migrate.engine import TRANSACTION_MODES, EngineOptions
from userfiles_db.migrate.errors import ConfigError
from userfiles_db.safe_yaml import strict_yaml
from userfiles_db.schema import package_data

DEFAULT_DB = "chatgpt_discord_bot"
DEFAULT_CONFIG = "migrate.yaml"
PYPROJECT = "pyproject.toml"
PYPROJECT_TABLE = "userfiles_db"  # [tool.userfiles_db]
ENV_PREFIX = "USERFILES_"
CONFIG_ENV = "USERFILES_CONFIG"
URI_ENV = "MONGODB_URI"  # the bot's own variable
DB_ENV = "MONGODB_DB"
CI_ENV = "CI"
# A settings file is a few hundred bytes: anything much larger is a mistake or an attack.
MAX_CONFIG_BYTES = 64 * 1024

Parser = Callable[[object, str, bool], Any]  # (value, where it came from, from the environment?)


def _fail(where: str, expected: str, value: object) -> ConfigError:
    return ConfigError(f"{where}: must be {expected}, got {value!r}")


def _text(value: object, where: str, from_env: bool) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(where, "a non-empty string", value)
    return value


def _seconds(value: object, where: str, from_env: bool) -> float:
    if from_env and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise _fail(where, "a positive number of seconds", value) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(where, "a positive number of seconds", value)
    if not math.isfinite(value) or value <= 0:  # .nan would wait forever, .inf too
        raise _fail(where, "a positive, finite number of seconds", value)
    return float(value)


def _flag(value: object, where: str, from_env: bool) -> bool:
    if from_env and isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
    if not isinstance(value, bool):  # "false" (a string) must not count as true
        raise _fail(where, "true or false", value)
    return value


def _positive_int(value: object, where: str, from_env: bool) -> int:
    if from_env and isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise _fail(where, "an integer >= 1", value) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(where, "an integer >= 1", value)
    return value


def _zone(value: object, where: str, from_env: bool) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(where, "a timezone name such as UTC or Europe/Paris", value)
    try:
        ZoneInfo(value)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise _fail(where, "a known timezone name such as UTC or Europe/Paris", value) from None
    return value


def _transactions(value: object, where: str, from_env: bool) -> str:
    if value not in TRANSACTION_MODES:
        raise _fail(where, f"one of {', '.join(TRANSACTION_MODES)}", value)
    return str(value)


def _db_name(value: object, where: str, from_env: bool) -> str:
    name = _text(value, where, from_env)
    bad = sorted({c for c in name if c in '/\\. "$\0'})
    if bad or len(name.encode()) > 63:
        raise _fail(where, 'a database name (at most 63 bytes, none of / \\ . space " $)', value)
    return name


def _collection_name(value: object, where: str, from_env: bool) -> str:
    name = _text(value, where, from_env)
    if "$" in name or "\0" in name or name.startswith("system."):
        raise _fail(where, "a collection name (no $, not system.*)", value)
    return name


# The settings a file (or the environment, as USERFILES_<NAME>) may give.
SETTINGS: dict[str, Parser] = {
    "uri": _text,
    "db": _db_name,
    "migrations": _text,
    "schema": _text,
    "embedded": _flag,
    "server_timeout_seconds": _seconds,
    "changelog_collection": _collection_name,
    "lock_collection": _collection_name,
    "lock_lease_seconds": _seconds,
    "lock_timeout_seconds": _seconds,
    "lock_poll_seconds": _seconds,
    "transactions": _transactions,
    "history_collection": _collection_name,
    "retry_seconds": _seconds,
    "majority_timeout_seconds": _seconds,
}
# The options migrations read through context().option(name); each also USERFILES_<NAME>.
MIGRATION_OPTIONS: dict[str, tuple[Parser, Any]] = {
    "legacy_timezone": (_zone, "UTC"),
    "batch_size": (_positive_int, 5000),
    "allow_index_rebuild": (_flag, False),
}
FILE_KEYS = frozenset(SETTINGS) | {"migration_options"}
ENGINE_KEYS = (
    "changelog_collection", "lock_collection", "lock_lease_seconds", "lock_timeout_seconds",
    "lock_poll_seconds", "transactions", "history_collection", "retry_seconds", "majority_timeout_seconds",
)  # fmt: skip
_TABLE_MENTION = re.compile(r"tool\s*\.\s*[\"']?" + PYPROJECT_TABLE)


def env_name(setting: str) -> str:
    """The environment variable of a setting or migration option: ``USERFILES_<NAME>``."""
    return ENV_PREFIX + setting.upper()


@dataclass(frozen=True)
class Settings:
    uri: str | None  # None: no URI anywhere (the embedded server, when allowed)
    db: str
    migrations: Path
    engine: EngineOptions
    server_timeout_seconds: float = 5.0
    embedded: bool = False  # the embedded server was asked for explicitly
    migrations_configured: bool = False  # False: the bundled migrations
    config_file: Path | None = None
    project_dir: Path = field(default_factory=Path.cwd)  # the config file's directory, else cwd
    uri_database: str | None = None  # the database named in the URI's path (ignored)
    schema: Path | None = None  # the schema directory; None: the bundled schema/
    sources: dict[str, str] = field(default_factory=dict)  # setting -> where its value came from

    @property
    def ignored_uri_database(self) -> str | None:
        """The URI's database when it differs from the one used (it is only the auth source)."""
        return self.uri_database if self.uri_database and self.uri_database != self.db else None


def bundled_migrations() -> Path:
    """The migrations shipped with the package (the repository's ``migrations/``)."""
    return Path(str(package_data("userfiles_db.bundled_migrations", "migrations")))


# ---------------------------------------------------------------- passwords

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# user:password@ inside free text, up to the last @ of the token (a password may hold a raw @).
_USERINFO_IN_TEXT = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.\-]*://)?[^\s:/@'\"]*):[^\s'\"]*@")
# Secrets a URI carries in its options: the TLS key file's password and an AWS session token.
_QUERY_SECRET = re.compile(
    r"(?i)((?:tlsCertificateKeyFilePassword|sslPEMKeyPassword)=|AWS_SESSION_TOKEN(?::|%3A))([^&\s'\",]+)"
)
_secrets: set[str] = set()


def _password(uri: str) -> str | None:
    """The password part of ``uri``, found without parsing it (parsing is what fails)."""
    match = _SCHEME.match(uri)
    rest = uri[match.end() :] if match else uri
    at = rest.rfind("@")
    if at == -1 or ":" not in rest[:at]:
        return None
    return rest[:at].split(":", 1)[1]


def forget_secrets() -> None:
    """Start a new command: forget the passwords earlier commands of this process registered
    (one process may run many, e.g. tests or a long-lived caller of the CLI)."""
    _secrets.clear()


def register_secret(uri: str) -> None:
    """Remember ``uri``'s password so that ``redact`` masks it wherever it appears later."""
    password = _password(uri)
    if password:
        _secrets.update({password, unquote(password)})
    for match in _QUERY_SECRET.finditer(uri):
        _secrets.update({match[2], unquote(match[2])})


def redact_uri(uri: str) -> str:
    """``uri`` with its password masked, whatever shape it has (no scheme, raw @, empty user)."""
    match = _SCHEME.match(uri)
    start = match.end() if match else 0
    rest = uri[start:]
    at = rest.rfind("@")
    if at != -1 and ":" in rest[:at]:
        user = rest[:at].split(":", 1)[0]
        uri = f"{uri[:start]}{user}:***{rest[at:]}"
    return _QUERY_SECRET.sub(r"\1***", uri)


def redact(text: str, uri: str | None = None) -> str:
    """``text`` with every password masked: those of URIs seen so far (``register_secret``),
    ``uri``'s, and any ``user:password@`` in the text."""
    if uri:
        register_secret(uri)
    for secret in sorted(_secrets, key=len, reverse=True):
        if len(secret) >= 3:  # shorter ones are masked in their URI shape only
            text = text.replace(secret, "***")
    return _QUERY_SECRET.sub(r"\1***", _USERINFO_IN_TEXT.sub(r"\1:***@", text))


def uri_database(uri: str) -> str | None:
    """The database named in the URI's path, read without the driver (no DNS for +srv)."""
    match = _SCHEME.match(uri)
    rest = uri[match.end() :] if match else uri
    rest = rest[rest.rfind("@") + 1 :]
    if "/" not in rest:
        return None
    path = rest.split("/", 1)[1].split("?", 1)[0]
    return unquote(path) or None


def check_uri(uri: str, where: str) -> None:
    """Refuse a URI the driver would refuse, with its password masked in the message."""
    register_secret(uri)
    shown = redact_uri(uri)
    if not uri.startswith(("mongodb://", "mongodb+srv://")):
        raise ConfigError(f"{where}: a MongoDB URI starts with mongodb:// or mongodb+srv://, got {shown!r}")
    try:
        try:  # validates without resolving a +srv host (no DNS while reading settings)
            from pymongo.uri_parser_shared import _validate_uri
        except ImportError:  # older PyMongo: the public parser (resolves +srv, so skip those)
            if uri.startswith("mongodb://"):
                from pymongo.uri_parser import parse_uri

                parse_uri(uri)
        else:
            _validate_uri(uri)
    except Exception as exc:  # InvalidURI, ConfigurationError, ValueError: all mean "bad URI"
        raise ConfigError(f"{where}: invalid MongoDB URI {shown!r}: {redact(str(exc), uri)}") from None


# ---------------------------------------------------------------- config files


def _read_text(path: Path) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(f"config file {str(path)!r} is {size} bytes, more than {MAX_CONFIG_BYTES}")
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse ``migrate.yaml`` (safe, no aliases, size-capped); raises ``ConfigError`` naming it."""
    if path.name == PYPROJECT or path.suffix == ".toml":
        table = _pyproject_table(path)
        if table is None:
            raise ConfigError(f"config file {str(path)!r} has no [tool.{PYPROJECT_TABLE}] table")
        return _check_keys(table, path)
    try:
        raw = strict_yaml(_read_text(path))  # a SafeLoader, without aliases or repeated keys
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    except RecursionError:  # [[[[...: 64 KiB of nesting outruns the parser's recursion
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: nested too deeply") from None
    if raw is None:
        return {}
    return _check_keys(raw, path)


def _check_keys(raw: object, path: Path) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {str(path)!r}: expected a mapping of settings")
    _refuse_unknown(raw, FILE_KEYS, f"config file {str(path)!r}", "setting")
    return raw


def _refuse_unknown(given: Mapping[Any, Any], known: Collection[str], where: str, what: str) -> None:
    """``ConfigError`` naming every key of ``given`` that is not ``known`` (and the known ones):
    a misspelled setting is an error, never silently ignored."""
    unknown = sorted(repr(key) if not isinstance(key, str) else key for key in given if key not in known)
    if unknown:
        raise ConfigError(f"{where}: unknown {what}(s) {unknown}; known: {sorted(known)}")


def _load_toml(text: str) -> dict[str, Any]:
    try:
        import tomllib  # type: ignore[import-not-found,unused-ignore]
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef,import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(
                f"reading [tool.{PYPROJECT_TABLE}] from pyproject.toml needs Python 3.11+ or the "
                "tomli package; or use migrate.yaml"
            ) from None
    data: dict[str, Any] = tomllib.loads(text)
    return data


def _pyproject_table(path: Path) -> dict[str, Any] | None:
    """``[tool.userfiles_db]`` of a ``pyproject.toml``, or ``None`` when it has none."""
    text = _read_text(path)
    if not _TABLE_MENTION.search(text):  # most pyproject.toml files: no need to parse them
        return None
    try:
        data = _load_toml(text)
    except ConfigError:
        raise
    except Exception as exc:  # tomllib.TOMLDecodeError
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    tool = data.get("tool", {})
    table = tool.get(PYPROJECT_TABLE) if isinstance(tool, dict) else None
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"config file {str(path)!r}: [tool.{PYPROJECT_TABLE}] must be a table")
    return table


def find_config(cwd: Path) -> Path | None:
    """``migrate.yaml``, else a ``pyproject.toml`` with ``[tool.userfiles_db]``, in ``cwd`` or the
    nearest parent; the search stops at a project root (a directory holding ``.git`` or a
    ``pyproject.toml``), so a project without ``.git`` (a Docker image, a tarball) never picks up
    the ``migrate.yaml`` of a directory above it: another project's URI and database."""
    for folder in (cwd, *cwd.parents):
        candidate = folder / DEFAULT_CONFIG
        if candidate.is_file():
            return candidate
        pyproject = folder / PYPROJECT
        if pyproject.is_file():
            return pyproject if _pyproject_table(pyproject) is not None else None
        if (folder / ".git").exists():
            return None
    return None


# ---------------------------------------------------------------- resolving


def _env(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    for name in names:
        value = environ.get(name)
        if value is not None and value.strip():  # an empty secret counts as missing
            return name, value
    return None


def resolve(
    *,
    uri: str | None = None,
    db: str | None = None,
    config: str | None = None,
    migrations: str | None = None,
    embedded: bool | None = None,
    schema: str | None = None,
    environ: Mapping[str, str],
    cwd: Path,
) -> Settings:
    """Settings from flags, then the environment, then the config file, then the defaults.

    Raises ``ConfigError`` naming the setting, where it came from and what it must be.
    """
    config_source = "--config"
    if config is None and (found := _env(environ, CONFIG_ENV)):
        config_source, config = found
    if config is not None:
        path: Path | None = Path(config) if Path(config).is_absolute() else cwd / config
        assert path is not None
        if not path.is_file():
            raise ConfigError(f"config file {config!r} does not exist ({config_source})")
    else:
        path = find_config(cwd)
    file = read_config_file(path) if path is not None else {}
    file_label = f"config file {str(path)!r}"
    flags: dict[str, object] = {
        "uri": uri, "db": db, "migrations": migrations, "embedded": embedded, "schema": schema,
    }  # fmt: skip
    envs: dict[str, tuple[str, ...]] = {"uri": (env_name("uri"), URI_ENV), "db": (env_name("db"), DB_ENV)}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, parse in SETTINGS.items():
        flag = flags.get(name)
        if flag is not None and flag != "":
            values[name], sources[name] = parse(flag, f"--{name}", True), f"--{name}"
        elif found := _env(environ, *envs.get(name, (env_name(name),))):
            values[name], sources[name] = parse(found[1], found[0], True), found[0]
        elif name in file:
            values[name], sources[name] = parse(file[name], f"{name} in {file_label}", False), file_label
    options = file.get("migration_options", {})
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ConfigError(f"migration_options in {file_label}: must be a mapping, got {options!r}")
    _refuse_unknown(options, MIGRATION_OPTIONS, f"migration_options in {file_label}", "option")
    chosen_options: dict[str, Any] = {}
    for name, (parse, default) in MIGRATION_OPTIONS.items():
        if found := _env(environ, env_name(name)):
            chosen_options[name] = parse(found[1], found[0], True)
            sources[f"migration_options.{name}"] = found[0]
        elif name in options:
            where = f"migration_options.{name} in {file_label}"
            chosen_options[name] = parse(options[name], where, False)
            sources[f"migration_options.{name}"] = file_label
        else:
            chosen_options[name] = default
    chosen_uri: str | None = values.get("uri")
    if chosen_uri is not None:
        check_uri(chosen_uri, sources["uri"] if sources["uri"] != file_label else f"uri in {file_label}")
    chosen_embedded = bool(values.get("embedded", False))
    if chosen_uri is not None and chosen_embedded:
        raise ConfigError(
            f"both a URI ({sources['uri']}) and the embedded server ({sources['embedded']}) are asked "
            "for: choose one"
        )
    project_dir = path.parent if path is not None else cwd

    def directory(setting: str) -> Path | None:
        # Relative to the config file when it came from there, else to the working directory.
        given = values.get(setting)
        if given is None:
            return None
        path = Path(given)
        if not path.is_absolute():
            path = (project_dir if sources[setting] == file_label else cwd) / path
        return path

    folder = values.get("migrations")
    migrations_dir = directory("migrations") or bundled_migrations()
    engine_values = {k: values[k] for k in ENGINE_KEYS if k in values}
    engine = EngineOptions(**engine_values, migration_options=chosen_options)
    return Settings(
        uri=chosen_uri,
        db=values.get("db", DEFAULT_DB),
        migrations=migrations_dir,
        engine=engine,
        server_timeout_seconds=values.get("server_timeout_seconds", 5.0),
        embedded=chosen_embedded,
        migrations_configured=folder is not None,
        config_file=path,
        project_dir=project_dir,
        uri_database=uri_database(chosen_uri) if chosen_uri else None,
        sources=sources,
        schema=directory("schema"),
    )


def ci_requested(environ: Mapping[str, str]) -> bool:
    """``CI`` is set (to anything but empty, 0 or false), as CI services do."""
    return environ.get(CI_ENV, "").strip().lower() not in {"", "0", "false", "no"}


def require_target(settings: Settings, environ: Mapping[str, str], interactive: bool) -> None:
    """Refuse to fall back to the embedded server where nobody would notice: in CI or without
    a terminal, a missing URI is an error unless the embedded server was asked for."""
    if settings.uri is not None or settings.embedded:
        return
    if interactive and not ci_requested(environ):
        return
    why = "CI is set" if ci_requested(environ) else "not run from a terminal"
    raise ConfigError(
        f"no MongoDB URI is configured ({why}). Set MONGODB_URI (or USERFILES_URI, --uri, uri in "
        "migrate.yaml), or pass --embedded to use the embedded local server on purpose"
    )


def new_migrations_dir(settings: Settings) -> Path:
    """Where ``new`` writes: the configured directory, else ``./migrations`` of the project (the
    config file's directory, else the working directory); never the bundled migrations."""
    folder = settings.migrations if settings.migrations_configured else settings.project_dir / "migrations"
    try:
        bundled: Path | None = bundled_migrations().resolve()
    except ModuleNotFoundError:
        bundled = None
    if bundled is not None and folder.resolve() == bundled:
        raise ConfigError(
            f"{folder} holds the migrations bundled with userfiles_db, which are never written to; "
            "create project migrations elsewhere: --migrations DIR (or migrations: in migrate.yaml)"
        )
    return folder


def describe_target(settings: Settings, uri: str | None = None) -> str:
    """The first line every command prints: the database and where it is."""
    where = "the embedded local MongoDB" if settings.uri is None else redact_uri(settings.uri)
    line = f"Database {settings.db} on {where}"
    ignored = settings.ignored_uri_database
    if ignored:
        line += f" (the URI's database {ignored!r} is ignored: it is only the driver's auth source)"
    return line


__all__ = [
    "DEFAULT_DB",
    "MIGRATION_OPTIONS",
    "SETTINGS",
    "Settings",
    "bundled_migrations",
    "ci_requested",
    "describe_target",
    "env_name",
    "forget_secrets",
    "new_migrations_dir",
    "read_config_file",
    "redact",
    "redact_uri",
    "register_secret",
    "require_target",
    "resolve",
]
