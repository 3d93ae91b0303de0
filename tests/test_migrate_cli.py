"""migrate.py: exact output and exit codes (CliRunner), against the real server."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from pymongo.database import Database

from tests.migration_fixtures import marker_migration, migrations_copy
from userfiles_db.cli import State, cli, tools
from userfiles_db.local_server import LocalMongod, free_port

BUNDLED_IDS = [
    "0001_create_user_files",
    "0002_adopt_legacy_records",
    "0003_enable_ttl",
    "0004_enforce_validator",
]


@pytest.fixture
def run(mongod: LocalMongod, real_db: Database[Any], tmp_path: Path) -> Any:
    """Invoke migrate.py against the test database, with a clean environment and cwd."""

    def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
        environ = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name} if env is None else env
        state = State(environ=environ, cwd=tmp_path)
        return CliRunner().invoke(cli, list(args), obj=state, catch_exceptions=False)

    return invoke


def test_up_status_check_down(run: Any, real_db: Database[Any], mongod: LocalMongod) -> None:
    result = run("status", "--check")
    assert result.exit_code == 3, result.output
    assert result.stderr.splitlines()[0] == f"Database {real_db.name} on {mongod.uri}"
    assert result.stdout.splitlines()[-1] == f"Database {real_db.name}: 0 applied, 4 pending."
    assert real_db.list_collection_names() == []  # read-only

    result = run("up")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-2:] == [
        "Applied 4 migration(s).",
        f"Database {real_db.name}: 4 applied, 0 pending.",
    ]

    result = run("status", "--check")
    assert result.exit_code == 0, result.output
    assert [line.split()[:2] for line in result.stdout.splitlines()[:4]] == [
        ["applied", i] for i in BUNDLED_IDS
    ]

    result = run("check")
    assert (result.exit_code, result.stdout) == (
        0, "No drift: the collection matches the declared schema.\n"
    )  # fmt: skip

    result = run("up")
    assert (result.exit_code, result.stdout) == (
        0, f"Nothing to apply: the database is up to date.\nDatabase {real_db.name}: 4 applied, 0 pending.\n"
    )  # fmt: skip

    result = run("down", "--to", "base")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "Undid 4 migration(s)."


def test_status_json(run: Any) -> None:
    run("up", "--to", "0002_adopt_legacy_records")
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [a["id"] for a in data["applied"]] == BUNDLED_IDS[:2]
    assert all(len(a["checksum"]) == 64 and a["applied_at"].endswith("+00:00") for a in data["applied"])
    assert data["pending"] == [
        {"id": i, "title": data["pending"][n]["title"], "out_of_order": False}
        for n, i in enumerate(BUNDLED_IDS[2:])
    ]


def test_check_reports_drift_with_exit_4(run: Any, real_db: Database[Any]) -> None:
    run("up")
    real_db["user_files"].drop_index("user_id_1_expires_at_-1")
    result = run("check")
    assert result.exit_code == 4
    assert result.stdout.startswith("drift: user_files index user_id_1_expires_at_-1: declared")


def test_an_edited_migration_exits_4_naming_the_file(run: Any, tmp_path: Path) -> None:
    folder = migrations_copy(tmp_path)
    assert run("--migrations", str(folder), "up").exit_code == 0
    (folder / "0003_enable_ttl.py").write_text("'''Changed.'''\ndef up(db): pass\ndef down(db): pass\n")
    result = run("--migrations", str(folder), "up")
    assert result.exit_code == 4
    assert "0003_enable_ttl.py" in result.output
    assert run("--migrations", str(folder), "status", "--check").exit_code == 4
    assert run("--migrations", str(folder), "check").exit_code == 4


def test_out_of_order_exits_4(run: Any, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    marker_migration(folder, "0001_a")
    marker_migration(folder, "0003_c")
    run("--migrations", str(folder), "up")
    marker_migration(folder, "0002_b")
    result = run("--migrations", str(folder), "up")
    assert result.exit_code == 4
    assert "0002_b" in result.output
    assert run("--migrations", str(folder), "up", "--allow-out-of-order").exit_code == 0


def test_lock_timeout_exits_5(run: Any, real_db: Database[Any], tmp_path: Path) -> None:
    real_db["migrations_lock"].insert_one(
        {"_id": "lock", "owner": "other", "host": "pod-1", "expires_at": dt.datetime(2100, 1, 1)}
    )
    (tmp_path / "migrate.yaml").write_text("lock_timeout_seconds: 0.3\nlock_poll_seconds: 0.1\n")
    result = run("up")
    assert result.exit_code == 5
    assert "held by run other on host pod-1" in result.output
    assert run("unlock", "--force").stdout == "Released the lock of run other on host pod-1.\n"
    assert run("up").exit_code == 0


def test_unreachable_server_fails_fast_without_the_password(run: Any, tmp_path: Path) -> None:
    uri = f"mongodb://bot:s3cret-pw@127.0.0.1:{free_port()}/"
    (tmp_path / "migrate.yaml").write_text("server_timeout_seconds: 1\n")
    started = time.monotonic()
    result = run("--uri", uri, "status")
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert result.stderr.splitlines()[1].startswith(
        "Error: cannot reach MongoDB at mongodb://bot:***@127.0.0.1:"
    )
    assert "s3cret-pw" not in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("uri: [unclosed", "is not valid YAML"),
        ("- a list\n", "expected a mapping of settings"),
        ("colour: blue\n", "unknown setting(s) ['colour']"),
        ("transactions: sometimes\n", "must be one of auto, never, always, got 'sometimes'"),
        ("lock_timeout_seconds: -1\n", "must be a positive, finite number of seconds, got -1"),
    ],
)
def test_a_bad_config_file_exits_2(run: Any, tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "migrate.yaml").write_text(content)
    result = run("status")
    assert result.exit_code == 2
    assert result.output.startswith("Error: config file") or message in result.output
    assert message in result.output


def test_a_missing_config_file_exits_2(run: Any) -> None:
    result = run("--config", "nope.yaml", "status")
    assert (result.exit_code, result.output) == (
        2,
        "Error: config file 'nope.yaml' does not exist (--config)\n",
    )


def test_flags_beat_environment_beats_file(mongod: LocalMongod, tmp_path: Path) -> None:
    (tmp_path / "migrate.yaml").write_text(f"uri: {mongod.uri}\ndb: from_file\n")
    state = State(environ={"MONGODB_DB": "from_env"}, cwd=tmp_path)
    assert state.settings().db == "from_env"
    state = State(db="from_flag", environ={"MONGODB_DB": "from_env"}, cwd=tmp_path)
    assert state.settings().db == "from_flag"
    assert State(environ={}, cwd=tmp_path).settings().db == "from_file"
    (tmp_path / "migrate.yaml").write_text("uri: mongodb://127.0.0.1:1/from_uri\n")
    assert State(environ={}, cwd=tmp_path).settings().db == "chatgpt_discord_bot"  # never the URI's
    (tmp_path / "migrate.yaml").write_text("uri: mongodb://127.0.0.1:1/\n")
    assert State(environ={}, cwd=tmp_path).settings().db == "chatgpt_discord_bot"


def test_new_creates_the_next_migration_from_the_template(run: Any, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    marker_migration(folder, "0007_x")
    result = run("--migrations", str(folder), "new", "add_checksum")
    assert result.stdout == f"Created {folder / '0008_add_checksum.py'}\n"
    text = (folder / "0008_add_checksum.py").read_text()
    assert text.startswith('"""Add checksum.')
    assert "def up(db: Any) -> None:" in text
    assert run("--migrations", str(folder), "new", "Bad Slug").exit_code == 2


def test_every_command_has_help_and_is_in_the_docs() -> None:
    reference = (Path(__file__).parent.parent / "docs" / "migrations.md").read_text()
    for name, command in cli.commands.items():
        assert command.help, name
        assert "Example:" in command.help, name
        assert f"migrate.py {name}" in reference, f"{name} is missing from docs/migrations.md"


def test_the_target_comes_first_and_the_uri_database_is_ignored(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    uri = f"mongodb://127.0.0.1:{mongod.port}/myFirstDatabase?directConnection=true"
    ignored = "(the URI's database 'myFirstDatabase' is ignored: it is only the driver's auth source)"
    result = CliRunner().invoke(
        cli, ["up"], obj=State(environ={"MONGODB_URI": uri, "MONGODB_DB": real_db.name}, cwd=tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == f"Database {real_db.name} on {uri} {ignored}"
    assert "user_files" in real_db.list_collection_names()
    assert "myFirstDatabase" not in real_db.client.list_database_names()
    # without --db or a variable: the bot's database, never the URI's (read-only: status)
    result = CliRunner().invoke(cli, ["status"], obj=State(environ={"MONGODB_URI": uri}, cwd=tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == f"Database chatgpt_discord_bot on {uri} {ignored}"
    assert result.stdout.splitlines()[-1].startswith("Database chatgpt_discord_bot: ")


def test_every_command_takes_json(run: Any, real_db: Database[Any], tmp_path: Path) -> None:
    def stdout_json(*args: str, code: int = 0) -> dict[str, Any]:
        result = run(*args)
        assert result.exit_code == code, result.output
        data: dict[str, Any] = json.loads(result.stdout)  # one object, nothing else
        assert (data["ok"], data["exit_code"]) == (code == 0, code)
        return data

    planned = stdout_json("up", "--dry-run", "--json", code=3)
    assert list(planned["planned"]) == BUNDLED_IDS
    assert planned["applied"] == []
    assert real_db.list_collection_names() == []
    up = stdout_json("up", "--to", "0002_adopt_legacy_records", "--json")
    assert (up["command"], up["database"], up["applied"]) == ("up", real_db.name, BUNDLED_IDS[:2])
    assert [a["id"] for a in up["status"]["applied"]] == BUNDLED_IDS[:2]
    assert stdout_json("status", "--json", "--check", code=3)["pending"][0]["id"] == BUNDLED_IDS[2]
    assert stdout_json("check", "--json", code=4)["drift"]  # half migrated: TTL and validator missing
    assert stdout_json("down", "--json")["undone"] == [BUNDLED_IDS[1]]
    assert stdout_json("stamp", "0001_create_user_files", "--json")["stamped"] == []
    assert stdout_json("unlock", "--json")["released"] is None
    created = stdout_json("--migrations", str(tmp_path / "m"), "new", "x", "--json")["created"]
    assert created == str(tmp_path / "m" / "0001_x.py")
    failed = stdout_json("up", "--to", "9999_nope", "--json", code=2)
    assert "9999_nope" in failed["error"]


def test_logs_go_to_stderr_as_json_lines(run: Any, real_db: Database[Any]) -> None:
    result = run("--log-format", "json", "up", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["applied"] == BUNDLED_IDS
    logs = [json.loads(line) for line in result.stderr.splitlines()]
    assert logs[0]["level"] == "notice"
    assert (logs[0]["database"], logs[0]["embedded"]) == (real_db.name, False)
    messages = [log["message"] for log in logs]
    assert messages[1].startswith("0001_create_user_files: ")  # the runner's steps, as logs
    assert all(log["time"].endswith("+00:00") for log in logs)


def test_quiet_and_verbose(run: Any, real_db: Database[Any]) -> None:
    result = run("-q", "up")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Applied 4 migration(s).",
        f"Database {real_db.name}: 4 applied, 0 pending.",
    ]
    assert len(result.stderr.splitlines()) == 1  # the target only
    result = run("-v", "status")
    assert "setting db from MONGODB_DB" in result.stderr
    assert "setting db" not in run("status").stderr


def test_dry_run_exits_3_when_a_migration_would_run(run: Any) -> None:
    result = run("up", "--dry-run")
    assert result.exit_code == 3, result.output
    assert "Dry run: 4 migration(s) would run; nothing was written." in result.stdout
    assert run("up").exit_code == 0
    result = run("up", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Dry run: 0 migration(s) would run; nothing was written." in result.stdout


def test_the_lock_timeout_is_reported_in_json_too(run: Any, real_db: Database[Any], tmp_path: Path) -> None:
    real_db["migrations_lock"].insert_one(
        {"_id": "lock", "owner": "other", "host": "pod-1", "expires_at": dt.datetime(2100, 1, 1)}
    )
    (tmp_path / "migrate.yaml").write_text("lock_timeout_seconds: 0.2\nlock_poll_seconds: 0.1\n")
    result = run("up", "--json")
    assert result.exit_code == 5
    data = json.loads(result.stdout)
    assert (data["ok"], data["exit_code"]) == (False, 5)
    assert "held by run other on host pod-1" in data["error"]


REPO = Path(__file__).parent.parent


def _run_program(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("USERFILES_", "MONGODB_"))}
    return subprocess.run(
        list(command), cwd=REPO, env={**environ, **(env or {})}, text=True, capture_output=True, timeout=60
    )


def test_help_says_the_name_it_was_run_as() -> None:
    script = Path(sys.executable).parent / "userfiles-migrate"
    runs = [
        ((sys.executable, "migrate.py"), "migrate.py"),
        ((sys.executable, "-m", "userfiles_db.cli"), "python -m userfiles_db.cli"),
        ((str(script),), "userfiles-migrate"),
    ]
    for command, name in runs:
        done = _run_program(*command, "up", "--help")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"Usage: {name} up [OPTIONS]"), done.stdout
        assert f"Example: {name} up --to 0002_adopt_legacy_records" in done.stdout


def test_python_m_userfiles_db_cli_runs_the_cli(mongod: LocalMongod, real_db: Database[Any]) -> None:
    env = {"MONGODB_URI": mongod.uri, "MONGODB_DB": real_db.name}
    done = _run_program(sys.executable, "-m", "userfiles_db.cli", "status", "--check", env=env)
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines()[-1] == f"Database {real_db.name}: 0 applied, 4 pending."


def test_shell_completion_of_the_console_script() -> None:
    script = str(Path(sys.executable).parent / "userfiles-migrate")
    done = _run_program(script, env={"_USERFILES_MIGRATE_COMPLETE": "bash_source"})
    assert done.returncode == 0, done.stderr
    assert "_userfiles_migrate_completion" in done.stdout
    env = {
        "_USERFILES_MIGRATE_COMPLETE": "bash_complete",
        "COMP_WORDS": "userfiles-migrate st",
        "COMP_CWORD": "1",
    }
    done = _run_program(script, env=env)
    assert sorted(done.stdout.split()) == ["plain,stamp", "plain,status"]
    env["COMP_WORDS"], env["COMP_CWORD"] = "userfiles-migrate up --dr", "2"
    assert _run_program(script, env=env).stdout.split() == ["plain,--dry-run"]


def test_the_sweep_names_its_target_first_too(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    uri = f"mongodb://127.0.0.1:{mongod.port}/myFirstDatabase?directConnection=true"
    env = {"MONGODB_URI": uri, "MONGODB_DB": real_db.name}
    real_db.create_collection("user_files")  # the sweep refuses a database without one
    result = CliRunner(env=env).invoke(tools, ["sweep", "--root", str(tmp_path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        f"Database {real_db.name} on {uri} (the URI's database 'myFirstDatabase' is ignored: it is only "
        "the driver's auth source)"
    )


def test_with_json_logs_the_steps_leave_stdout(run: Any, real_db: Database[Any]) -> None:
    result = run("--log-format", "json", "up")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Applied 4 migration(s).",
        f"Database {real_db.name}: 4 applied, 0 pending.",
    ]
    assert all(json.loads(line)["level"] in {"notice", "info"} for line in result.stderr.splitlines())
