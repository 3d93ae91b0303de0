"""docs/deploying.md stays true: every environment variable the package reads is listed, the JSON
shapes it documents are the ones the commands print, and the plugin example runs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from userfiles_db.local_server import LocalMongod

ROOT = Path(__file__).parent.parent
DOCS = (ROOT / "docs" / "deploying.md").read_text()

pytest_plugins = ["pytester"]


def environment_variables_read() -> set[str]:
    """Names the package reads from the environment, found in its source: ``*_ENV = "NAME"``
    constants and literal ``environ.get("NAME")`` / ``getenv("NAME")`` calls."""
    names: set[str] = set()
    for path in (ROOT / "userfiles_db").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"^\w*_ENV\s*=\s*\"([A-Z][A-Z0-9_]+)\"", text, re.M))
        names |= set(re.findall(r"(?:environ\.get|getenv)\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"environ\[\s*\"([A-Z][A-Z0-9_]+)\"\s*\]", text))
    return names


def test_every_environment_variable_is_documented() -> None:
    names = environment_variables_read()
    assert {"MONGODB_URI", "FILE_EXPIRATION_HOURS", "USERFILES_MONGOD", "USERFILES_TEST_URI"} <= names
    table = DOCS.split("### Environment variables the tools read", 1)[1].split("\n### ", 1)[0]
    missing = sorted(name for name in names if f"`{name}`" not in table)
    assert not missing, f"not in docs/deploying.md's table: {missing}"


def _json_blocks() -> list[Any]:
    section = DOCS.split("### JSON output", 1)[1].split("\n## ", 1)[0]
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", section, re.S)]


def _assert_documented_keys_exist(documented: Any, actual: Any, where: str) -> None:
    if isinstance(documented, dict):
        assert isinstance(actual, dict), where
        missing = set(documented) - set(actual)
        assert not missing, f"{where}: documented but not printed: {sorted(missing)}"
        for key, value in documented.items():
            _assert_documented_keys_exist(value, actual[key], f"{where}.{key}")
    elif isinstance(documented, list) and documented and actual:
        _assert_documented_keys_exist(documented[0], actual[0], f"{where}[0]")


@pytest.fixture
def half_migrated(mongod: LocalMongod) -> Iterator[tuple[dict[str, str], Database[Any]]]:
    """A database with two of the four migrations applied (so status and check have something
    to list), and the environment that points the commands at it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONGODB_", "USERFILES_"))}
    env.update(MONGODB_URI=mongod.uri, MONGODB_DB="t_deploy_docs")
    with mongod.client() as client:
        client.drop_database("t_deploy_docs")
        done = subprocess.run(
            [sys.executable, str(ROOT / "migrate.py"), "up", "--to", "0002_adopt_legacy_records"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        yield env, client["t_deploy_docs"]
        client.drop_database("t_deploy_docs")


def test_documented_json_keys_exist(
    half_migrated: tuple[dict[str, str], Database[Any]], tmp_path: Path
) -> None:
    env, _ = half_migrated
    orphan = tmp_path / "root" / "42" / "old.csv"
    orphan.parent.mkdir(parents=True)
    orphan.write_text("x")
    root = str(orphan.parents[1])
    commands = {
        "status": [sys.executable, str(ROOT / "migrate.py"), "status", "--json"],
        "check": [sys.executable, str(ROOT / "migrate.py"), "check", "--json"],
        "sweep": [sys.executable, "-m", "userfiles_db", "sweep", "--root", root, "--grace", "0", "--json"],
        "up": [sys.executable, str(ROOT / "migrate.py"), "up", "--json"],
        "history": [sys.executable, str(ROOT / "migrate.py"), "history", "--json", "--limit", "2"],
    }
    documented = dict(zip(commands, _json_blocks(), strict=True))
    for name, argv in commands.items():
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 4), done.stderr  # check: 4, the half-migrated collection drifts
        actual = json.loads(done.stdout)
        _assert_documented_keys_exist(documented[name], actual, name)
    assert not orphan.exists()


def test_plugin_example_runs(pytester: pytest.Pytester, mongod: LocalMongod) -> None:
    section = DOCS.split("## The pytest plugin", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makepyfile(test_example=example[1])
    result = pytester.runpytest("--strict-markers", f"--userfiles-uri={mongod.uri}")
    result.assert_outcomes(passed=2)
