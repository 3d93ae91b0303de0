"""migrate.py's settings: malformed configs and URIs (exit 2, no traceback, no password), typed
options, the environment prefix, the config file lookup, the database rule, where `new` writes.

No server is needed: every case here fails, or is decided, before a connection is opened.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.migration_fixtures import marker_migration
from userfiles_db.cli import State, cli
from userfiles_db.migrate import config as settings_module
from userfiles_db.migrate.config import (
    MIGRATION_OPTIONS,
    SETTINGS,
    bundled_migrations,
    env_name,
    redact,
    redact_uri,
    resolve,
)
from userfiles_db.migrate.errors import ConfigError

SECRET = "s3cretPW"
# Never reached: every case fails while reading settings, before connecting.
UNREACHABLE = "mongodb://127.0.0.1:1/"
DOCS = Path(__file__).parent.parent / "docs" / "cli.md"


def invoke(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None, interactive: bool = False
) -> Result:
    environ = {"MONGODB_URI": UNREACHABLE} if env is None else env
    state = State(environ=environ, cwd=tmp_path, interactive=interactive)
    # catch_exceptions=False: an exception escaping the CLI (a traceback) fails the test.
    return CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False)


def _bomb() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "migration_options:\n  legacy_timezone:\n" + "\n".join("    " + line for line in lines) + "\n"


# (case id, migrate.yaml content or None, extra environment, arguments, fragment of the error)
URI_CASES = [
    ("wrong-scheme", f"mongdb://bot:{SECRET}@db.example.net/", "starts with mongodb://"),
    ("http-scheme", f"http://bot:{SECRET}@db.example.net/", "starts with mongodb://"),
    ("no-scheme", f"bot:{SECRET}@db.example.net:27017", "starts with mongodb://"),
    ("empty-user", f"mongodb://:{SECRET}@db.example.net/", "invalid MongoDB URI"),
    ("raw-at-in-password", f"mongodb://bot:pa@{SECRET}@db.example.net/", "invalid MongoDB URI"),
    ("bad-port", f"mongodb://bot:{SECRET}@db.example.net:port/", "invalid MongoDB URI"),
    ("no-host", f"mongodb://bot:{SECRET}@/db", "invalid MongoDB URI"),
    ("bad-escape", f"mongodb://bot:{SECRET}%zz@db.example.net/", "invalid MongoDB URI"),
    ("srv-with-port", f"mongodb+srv://bot:{SECRET}@cluster0.example.net:27017/", "invalid MongoDB URI"),
    ("srv-two-hosts", f"mongodb+srv://bot:{SECRET}@a.example.net,b.example.net/", "invalid MongoDB URI"),
    ("bad-option", f"mongodb://bot:{SECRET}@db.example.net/?tls=perhaps", "invalid MongoDB URI"),
    ("bad-mechanism", f"mongodb://bot:{SECRET}@db.example.net/?authMechanism=NOPE", "invalid MongoDB URI"),
    ("colon-in-password", f"mongodb://bot:a:{SECRET}@db.example.net/", "invalid MongoDB URI"),
    ("unclosed-ipv6", f"mongodb://bot:{SECRET}@[::1/", "invalid MongoDB URI"),
]
CONFIG_CASES: list[tuple[str, str | None, dict[str, str], tuple[str, ...], str]] = [
    # misspelled or unknown settings and options
    ("misspelled-option", "migration_options:\n  legacy_timezon: Europe/Paris\n", {}, (),
     "unknown option(s) ['legacy_timezon']; known: ['allow_index_rebuild', 'batch_size', 'legacy_timezone']"),
    ("unknown-setting", "lock_timeout: 5\n", {}, (), "unknown setting(s) ['lock_timeout']"),
    ("int-key", "1: x\n", {}, (), "unknown setting(s) ['1']"),
    ("options-int-key", "migration_options:\n  1: x\n", {}, (), "unknown option(s) ['1']"),
    ("options-list", "migration_options: [1, 2]\n", {}, (), "must be a mapping"),
    # typed migration options
    ("batch-size-true", "migration_options:\n  batch_size: true\n", {}, (), "an integer >= 1, got True"),
    ("batch-size-zero", "migration_options:\n  batch_size: 0\n", {}, (), "an integer >= 1, got 0"),
    ("batch-size-float", "migration_options:\n  batch_size: 2.5\n", {}, (), "an integer >= 1, got 2.5"),
    ("batch-size-string", "migration_options:\n  batch_size: '100'\n", {}, (), "an integer >= 1, got '100'"),
    ("rebuild-string", "migration_options:\n  allow_index_rebuild: 'false'\n", {}, (),
     "must be true or false, got 'false'"),
    ("rebuild-int", "migration_options:\n  allow_index_rebuild: 1\n", {}, (), "must be true or false, got 1"),
    ("zone-unknown", "migration_options:\n  legacy_timezone: Mars/Olympus\n", {}, (), "known timezone"),
    ("zone-number", "migration_options:\n  legacy_timezone: 5\n", {}, (), "timezone name"),
    ("zone-path", "migration_options:\n  legacy_timezone: ../../etc/passwd\n", {}, (), "known timezone"),
    # numbers: nan, inf, zero, booleans, strings
    ("timeout-nan", "server_timeout_seconds: .nan\n", {}, (), "positive, finite number of seconds, got nan"),
    ("timeout-inf", "server_timeout_seconds: .inf\n", {}, (), "positive, finite number of seconds, got inf"),
    ("timeout-minus-inf", "server_timeout_seconds: -.inf\n", {}, (), "got -inf"),
    ("timeout-zero", "server_timeout_seconds: 0\n", {}, (), "positive, finite number of seconds, got 0"),
    ("timeout-bool", "server_timeout_seconds: true\n", {}, (), "positive number of seconds, got True"),
    ("timeout-string", "server_timeout_seconds: '5'\n", {}, (), "positive number of seconds, got '5'"),
    ("lease-nan", "lock_lease_seconds: .nan\n", {}, (), "lock_lease_seconds in config file"),
    ("poll-inf", "lock_poll_seconds: .inf\n", {}, (), "lock_poll_seconds in config file"),
    ("wait-negative", "lock_timeout_seconds: -1\n", {}, (), "got -1"),
    ("transactions", "transactions: sometimes\n", {}, (), "one of auto, never, always"),
    # names
    ("db-dot", "db: my.db\n", {}, (), "a database name"),
    ("db-empty", "db: ''\n", {}, (), "a non-empty string"),
    ("db-list", "db: [a]\n", {}, (), "a non-empty string"),
    ("db-holding-a-uri", f"db: mongodb://bot:{SECRET}@h/\n", {}, (), "a database name"),
    ("collection-dollar", "changelog_collection: $log\n", {}, (), "a collection name"),
    ("collection-int", "lock_collection: 5\n", {}, (), "a non-empty string"),
    ("migrations-int", "migrations: 5\n", {}, (), "a non-empty string"),
    ("migrations-missing", "migrations: nowhere\n", {}, (), "does not exist"),
    ("uri-int", "uri: 5\n", {"MONGODB_URI": ""}, (), "uri in config file"),
    ("uri-in-file", f"uri: mongdb://bot:{SECRET}@h/\n", {"MONGODB_URI": ""}, (), "starts with mongodb://"),
    ("embedded-string", "embedded: 'yes'\n", {}, (), "must be true or false"),
    # the file itself
    ("invalid-yaml", "uri: [unclosed\n", {}, (), "is not valid YAML"),
    ("list", "- a list\n", {}, (), "expected a mapping of settings"),
    ("scalar", "hello\n", {}, (), "expected a mapping of settings"),
    ("tab-indent", "migration_options:\n\tbatch_size: 5\n", {}, (), "is not valid YAML"),
    ("alias", "db: &name bot\nchangelog_collection: *name\n", {}, (), "aliases (*name) are not allowed"),
    ("alias-bomb", _bomb(), {}, (), "aliases (*name) are not allowed"),
    ("duplicate-key", "db: one\ndb: two\n", {}, (), "line 2: 'db' is given twice"),
    ("duplicate-option", "migration_options:\n  batch_size: 5\n  batch_size: 6\n", {}, (), "given twice"),
    ("too-large", "# " + "x" * 70_000 + "\n", {}, (), "more than 65536"),
    ("missing-config", None, {}, ("--config", "nope.yaml"), "config file 'nope.yaml' does not exist"),
    ("missing-config-env", None, {"USERFILES_CONFIG": "nope.yaml"}, (), "(USERFILES_CONFIG)"),
    ("config-is-a-directory", None, {}, ("--config", "."), "does not exist"),
    # the environment, typed the same way
    ("env-batch-size", None, {"USERFILES_BATCH_SIZE": "abc"}, (), "USERFILES_BATCH_SIZE: must be an integer"),
    ("env-rebuild", None, {"USERFILES_ALLOW_INDEX_REBUILD": "maybe"}, (), "USERFILES_ALLOW_INDEX_REBUILD"),
    ("env-timeout-nan", None, {"USERFILES_SERVER_TIMEOUT_SECONDS": "nan"}, (), "finite"),
    ("env-zone", None, {"USERFILES_LEGACY_TIMEZONE": "Nowhere/City"}, (), "USERFILES_LEGACY_TIMEZONE"),
    ("env-db", None, {"USERFILES_DB": "a.b"}, (), "USERFILES_DB: must be a database name"),
    ("env-embedded", None, {"USERFILES_EMBEDDED": "perhaps"}, (), "USERFILES_EMBEDDED"),
    ("env-transactions", None, {"USERFILES_TRANSACTIONS": "yes"}, (), "USERFILES_TRANSACTIONS"),
    ("flag-db", None, {}, ("--db", "a/b"), "--db: must be a database name"),
    # the target: no URI where nobody would notice, or two targets
    ("no-uri-no-terminal", None, {"MONGODB_URI": ""}, (), "not run from a terminal"),
    ("uri-and-embedded", None, {}, ("--embedded",), "choose one"),
    # pyproject.toml
    ("pyproject-unknown", None, {}, ("--config", "pyproject.toml"), "unknown setting(s) ['colour']"),
]  # fmt: skip


@pytest.mark.parametrize(("uri", "message"), [c[1:] for c in URI_CASES], ids=[c[0] for c in URI_CASES])
@pytest.mark.parametrize("source", ["flag", "MONGODB_URI", "USERFILES_URI", "file"])
def test_a_malformed_uri_exits_2_without_its_password(
    tmp_path: Path, uri: str, message: str, source: str
) -> None:
    args: list[str] = []
    env: dict[str, str] = {}
    if source == "flag":
        args = ["--uri", uri]
    elif source == "file":
        (tmp_path / "migrate.yaml").write_text(json.dumps({"uri": uri}))
    else:
        env[source] = uri
    for extra in ([], ["--json"]):
        result = invoke(tmp_path, *args, "status", *extra, env=env)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output
        assert SECRET not in result.output, result.output
        assert message in result.stderr, result.stderr
    assert json.loads(result.stdout)["exit_code"] == 2


@pytest.mark.parametrize(
    ("content", "env", "args", "message"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_a_malformed_setting_exits_2_naming_it(
    tmp_path: Path, content: str | None, env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    if content is not None:
        (tmp_path / "migrate.yaml").write_text(content)
    if "pyproject.toml" in args:
        (tmp_path / "pyproject.toml").write_text(
            '[project]\nname = "bot"\n[tool.userfiles_db]\ncolour = "blue"\n'
        )
    result = invoke(tmp_path, *args, "status", env={"MONGODB_URI": UNREACHABLE, **env})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert SECRET not in result.output, result.output
    assert result.stdout == ""
    assert "\nError: " in "\n" + result.stderr, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("0001_Bad.py", "'''x'''\ndef up(db): pass\ndef down(db): pass\n", "named NNNN_slug.py"),
        ("0001_latin.py", b"'''caf\xe9'''\n", "not UTF-8 text"),
        ("0001_boom.py", "raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
        ("0001_exits.py", "import sys\nsys.exit(0)\n", "failed to import: SystemExit"),
        ("0001_nodoc.py", "def up(db): pass\ndef down(db): pass\n", "starts with a docstring"),
        ("0001_noup.py", "'''x'''\ndef down(db): pass\n", "defines no up(db)"),
    ],
)
def test_a_bad_migrations_directory_exits_2(
    tmp_path: Path, name: str, text: str | bytes, message: str
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    result = invoke(tmp_path, "--migrations", str(folder), "status")
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert message in result.stderr


def test_without_a_uri_ci_and_no_terminal_are_errors_unless_embedded_is_asked(tmp_path: Path) -> None:
    no_server = {"USERFILES_MONGOD": str(tmp_path / "no-mongod")}
    result = invoke(tmp_path, "up", env={"CI": "true"}, interactive=True)
    assert (result.exit_code, result.stdout) == (2, "")
    assert "no MongoDB URI is configured (CI is set)" in result.stderr
    assert "--embedded" in result.stderr
    result = invoke(tmp_path, "up", env={}, interactive=False)
    assert result.exit_code == 2
    assert "(not run from a terminal)" in result.stderr
    assert not (tmp_path / ".userfiles-mongod").exists()  # nothing was started
    # In a terminal without CI (the README's quick start), or asked for, the embedded server is
    # used: here none is installed, so the hint names the extra to install.
    cases: list[tuple[dict[str, str], tuple[str, ...], bool]] = [
        ({"CI": "false"}, (), True),
        ({"CI": "true", "USERFILES_EMBEDDED": "1"}, (), False),
        ({}, ("--embedded",), False),
    ]
    for env, args, interactive in cases:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in no_server.items():
                patch.setenv(key, value)
            result = invoke(tmp_path, *args, "status", env=env, interactive=interactive)
        assert result.exit_code == 1, result.output
        assert result.stderr.splitlines()[0] == "Database chatgpt_discord_bot on the embedded local MongoDB"
        assert "python -m pip install 'userfiles_db[server]'" in result.stderr


def test_the_database_is_never_taken_from_the_uri(tmp_path: Path) -> None:
    atlas = f"mongodb+srv://bot:{SECRET}@cluster0.example.net/myFirstDatabase?retryWrites=true&w=majority"
    found = resolve(environ={"MONGODB_URI": atlas}, cwd=tmp_path)
    assert (found.db, found.uri_database, found.ignored_uri_database) == (
        "chatgpt_discord_bot", "myFirstDatabase", "myFirstDatabase",
    )  # fmt: skip
    assert settings_module.describe_target(found) == (
        "Database chatgpt_discord_bot on mongodb+srv://bot:***@cluster0.example.net/myFirstDatabase"
        "?retryWrites=true&w=majority (the URI's database 'myFirstDatabase' is ignored: it is only the "
        "driver's auth source)"
    )
    # order: --db, then the environment, then the config file, then the bot's name
    (tmp_path / "migrate.yaml").write_text("db: from_file\n")
    env = {"MONGODB_URI": atlas}
    assert resolve(environ=env, cwd=tmp_path).db == "from_file"
    assert resolve(environ={**env, "MONGODB_DB": "legacy_env"}, cwd=tmp_path).db == "legacy_env"
    both = {**env, "MONGODB_DB": "legacy_env", "USERFILES_DB": "env"}
    assert resolve(environ=both, cwd=tmp_path).db == "env"
    assert resolve(db="flag", environ=both, cwd=tmp_path).db == "flag"
    same = resolve(db="myFirstDatabase", environ=env, cwd=tmp_path)
    assert same.ignored_uri_database is None
    assert "ignored" not in settings_module.describe_target(same)


def test_every_setting_comes_from_the_environment_with_one_prefix(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    env = {
        "USERFILES_URI": "mongodb://u:pw@127.0.0.1:1/", "MONGODB_URI": "mongodb://other:1/",
        "USERFILES_DB": "bot", "USERFILES_MIGRATIONS": "mine", "USERFILES_SERVER_TIMEOUT_SECONDS": "2.5",
        "USERFILES_CHANGELOG_COLLECTION": "log", "USERFILES_LOCK_COLLECTION": "lk",
        "USERFILES_LOCK_LEASE_SECONDS": "30", "USERFILES_LOCK_TIMEOUT_SECONDS": "7",
        "USERFILES_LOCK_POLL_SECONDS": "0.25", "USERFILES_TRANSACTIONS": "never",
        "USERFILES_LEGACY_TIMEZONE": "Europe/Paris", "USERFILES_BATCH_SIZE": "100",
        "USERFILES_ALLOW_INDEX_REBUILD": "yes",
        "USERFILES_HISTORY_COLLECTION": "hist",
        "USERFILES_RETRY_SECONDS": "12",
        "USERFILES_MAJORITY_TIMEOUT_SECONDS": "3",
        "USERFILES_SCHEMA": "declared",
    }  # fmt: skip
    found = resolve(environ=env, cwd=tmp_path)
    assert found.schema == tmp_path / "declared"
    assert (found.uri, found.db, found.migrations, found.server_timeout_seconds) == (
        "mongodb://u:pw@127.0.0.1:1/", "bot", tmp_path / "mine", 2.5,
    )  # fmt: skip
    engine = found.engine
    assert (engine.changelog_collection, engine.lock_collection, engine.transactions) == (
        "log",
        "lk",
        "never",
    )
    assert (engine.lock_lease_seconds, engine.lock_timeout_seconds, engine.lock_poll_seconds) == (30, 7, 0.25)
    assert (engine.history_collection, engine.retry_seconds, engine.majority_timeout_seconds) == (
        "hist",
        12,
        3,
    )
    assert engine.migration_options == {
        "legacy_timezone": "Europe/Paris", "batch_size": 100, "allow_index_rebuild": True,
    }  # fmt: skip
    assert found.sources["migration_options.batch_size"] == "USERFILES_BATCH_SIZE"
    # every setting and option has its variable, and the page documents each one
    names = {env_name(name) for name in (*SETTINGS, *MIGRATION_OPTIONS)}
    assert names - set(env) == {"USERFILES_EMBEDDED"}
    docs = DOCS.read_text()
    for name in (*names, "USERFILES_CONFIG", "USERFILES_LOG_FORMAT", "MONGODB_URI", "MONGODB_DB"):
        assert f"`{name}`" in docs, name


def test_the_environment_beats_the_file_option_by_option(tmp_path: Path) -> None:
    (tmp_path / "migrate.yaml").write_text(
        "lock_timeout_seconds: 9\nmigration_options:\n  batch_size: 10\n  legacy_timezone: Asia/Tokyo\n"
    )
    found = resolve(environ={"USERFILES_BATCH_SIZE": "20"}, cwd=tmp_path)
    assert found.engine.lock_timeout_seconds == 9
    assert found.engine.migration_options == {
        "legacy_timezone": "Asia/Tokyo", "batch_size": 20, "allow_index_rebuild": False,
    }  # fmt: skip


def test_the_config_file_is_found_upwards_and_in_pyproject(tmp_path: Path) -> None:
    project = tmp_path / "bot"
    deep = project / "src" / "cogs"
    deep.mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "bot"\n\n[tool.userfiles_db]\ndb = "from_pyproject"\n'
        'migrations = "db/migrations"\n'
        "[tool.userfiles_db.migration_options]\nbatch_size = 50\n"
    )
    found = resolve(environ={}, cwd=deep)
    assert (found.config_file, found.db, found.project_dir) == (
        project / "pyproject.toml",
        "from_pyproject",
        project,
    )
    assert found.migrations == project / "db" / "migrations"  # relative to the file
    assert found.engine.migration_options["batch_size"] == 50
    (project / "migrate.yaml").write_text("db: from_yaml\n")  # migrate.yaml first, in a directory
    assert resolve(environ={}, cwd=deep).db == "from_yaml"
    # the lookup stops at a repository root
    (deep / ".git").mkdir()
    assert resolve(environ={}, cwd=deep).config_file is None
    # a pyproject.toml without the table is a project root too: the lookup stops there (attack2:
    # a project without .git must not take a parent directory's migrate.yaml)
    (deep / ".git").rmdir()
    (deep / "pyproject.toml").write_text('[project]\nname = "userfiles_db"\n')
    assert resolve(environ={}, cwd=deep).config_file is None


def test_new_writes_into_the_project_never_into_the_bundled_migrations(tmp_path: Path) -> None:
    bundled = bundled_migrations()
    before = sorted(p.name for p in bundled.iterdir())
    result = invoke(tmp_path, "new", "add_tags", "--json", env={})
    assert result.exit_code == 0, result.output
    created = tmp_path / "migrations" / "0001_add_tags.py"
    assert json.loads(result.stdout)["created"] == str(created)
    assert created.is_file()
    assert "--migrations" in result.stderr  # how to run it
    # a config file up the tree makes its directory the project
    (tmp_path / "migrate.yaml").write_text("db: bot\n")
    (tmp_path / "sub").mkdir()
    assert invoke(tmp_path / "sub", "new", "second", env={}).exit_code == 0
    assert (tmp_path / "migrations" / "0002_second.py").is_file()
    # the configured directory wins
    marker_migration(tmp_path / "mine", "0007_x")
    (tmp_path / "migrate.yaml").write_text("migrations: mine\n")
    assert (
        invoke(tmp_path, "new", "third", env={}).stdout == f"Created {tmp_path / 'mine' / '0008_third.py'}\n"
    )
    # the bundled directory is refused, however it is named
    result = invoke(tmp_path, "--migrations", str(bundled), "new", "oops", env={})
    assert result.exit_code == 2
    assert "bundled with userfiles_db, which are never written to" in result.stderr
    assert sorted(p.name for p in bundled.iterdir()) == before


def test_redaction_happens_before_parsing_can_fail() -> None:
    assert redact_uri(f"mongdb://bot:{SECRET}@h/") == "mongdb://bot:***@h/"
    assert redact_uri(f"bot:{SECRET}@h") == "bot:***@h"
    assert redact_uri(f"mongodb://:{SECRET}@h/") == "mongodb://:***@h/"
    assert redact_uri(f"mongodb://bot:pa@{SECRET}@h/db?x=1") == "mongodb://bot:***@h/db?x=1"
    assert redact_uri("mongodb://bot@h:27017/db") == "mongodb://bot@h:27017/db"
    assert (
        redact(f"see http://bot:pa@{SECRET}@h/ and ftp://u:{SECRET}@x")
        == "see http://bot:***@h/ and ftp://u:***@x"
    )
    settings_module.register_secret(f"mongodb://bot:x%2F{SECRET}@h/")
    assert redact(f"auth failed for x/{SECRET}") == "auth failed for ***"


def test_option_values_reach_the_migrations_typed(tmp_path: Path) -> None:
    (tmp_path / "migrate.yaml").write_text(
        "migration_options:\n  allow_index_rebuild: false\n  batch_size: 7\n"
        "  legacy_timezone: America/New_York\n"
    )
    options = resolve(environ={}, cwd=tmp_path).engine.migration_options
    assert options == {"allow_index_rebuild": False, "batch_size": 7, "legacy_timezone": "America/New_York"}
    (tmp_path / "migrate.yaml").write_text("migration_options:\n  batchsize: 7\n")
    with pytest.raises(ConfigError, match=re.escape("known: ['allow_index_rebuild'")):
        resolve(environ={}, cwd=tmp_path)


SOURCES = ("flag", "USERFILES_DB", "MONGODB_DB", "file")


@settings(max_examples=60, deadline=None)
@given(
    present=st.sets(st.sampled_from(SOURCES)),
    uri_database=st.sampled_from(["", "myFirstDatabase", "admin"]),
)
def test_the_database_follows_its_order_and_never_the_uri(present: set[str], uri_database: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        cwd = Path(folder)
        (cwd / ".git").mkdir()  # nothing above is looked at
        if "file" in present:
            (cwd / "migrate.yaml").write_text("db: file\n")
        env = {"MONGODB_URI": f"mongodb://127.0.0.1:1/{uri_database}"}
        env.update({name: name.lower() for name in ("USERFILES_DB", "MONGODB_DB") if name in present})
        found = resolve(db="flag" if "flag" in present else None, environ=env, cwd=cwd)
    expected = next(
        (name.lower() for name in SOURCES if name in present), "chatgpt_discord_bot"
    )  # the model: the first source present, else the bot's name
    assert found.db == expected
    assert found.ignored_uri_database == (uri_database or None if uri_database != expected else None)


PASSWORD_CHARS = st.characters(
    min_codepoint=33, max_codepoint=126, blacklist_characters="*"
)  # printable ASCII: @ : / ? # % ' " included


@settings(max_examples=150, deadline=None)
@given(
    password=st.text(PASSWORD_CHARS, min_size=3, max_size=20),
    shape=st.sampled_from([
        "mongodb://bot:{p}@db.example.net/", "mongdb://bot:{p}@h/", "http://bot:{p}@h", "bot:{p}@h:27017",
        "mongodb://:{p}@h/", "mongodb+srv://bot:{p}@cluster0.example.net/myFirstDatabase?retryWrites=true",
    ]),
)  # fmt: skip
def test_no_password_survives_in_any_message(password: str, shape: str) -> None:
    uri = shape.format(p=password)
    scheme, _, _ = shape.partition("{p}")
    assert redact_uri(uri) == scheme + "***" + uri[uri.rfind("@") :]  # everything up to the last @
    try:
        settings_module.check_uri(uri, "--uri")
    except ConfigError as exc:
        message = redact(str(exc))
        assert password not in message


def test_the_schema_directory_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "migrate.yaml").write_text("schema: declared\nmigrations: migs\n")
    (tmp_path / "deeper").mkdir()
    found = resolve(environ={}, cwd=tmp_path / "deeper")
    assert (found.schema, found.migrations) == (tmp_path / "declared", tmp_path / "migs")
    assert found.sources["schema"] == f"config file {str(tmp_path / 'migrate.yaml')!r}"
    flagged = resolve(schema="elsewhere", environ={}, cwd=tmp_path / "deeper")
    assert flagged.schema == tmp_path / "deeper" / "elsewhere"  # a flag: the working directory
