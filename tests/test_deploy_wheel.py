"""The built wheel, installed in a fresh virtual environment outside the repository, works.

The wheel is built from a copy of the sources (pyproject.toml, README.md, LICENSE, the package,
schema/, migrations/) in a temporary directory, and installed with ``--no-deps`` into a virtual
environment whose only view of this one is a ``.pth`` line giving it the dependencies (PyMongo,
click, PyYAML): offline and quick. Every command runs from a temporary project directory, so no
source tree can shadow the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import userfiles_db
from userfiles_db.local_server import LocalMongod

ROOT = Path(__file__).parent.parent
SOURCES = ["pyproject.toml", "README.md", "LICENSE", "userfiles_db", "schema", "migrations"]
BUNDLED = ["0001_create_user_files", "0002_adopt_legacy_records", "0003_enable_ttl", "0004_enforce_validator"]


@dataclass
class Installed:
    venv: Path
    python: Path
    script: Path  # the console script userfiles-migrate
    site_packages: Path
    project: Path  # an empty project directory, outside the repository


def _run(
    argv: list[str], cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, env=dict(env) if env is not None else None, capture_output=True, text=True, timeout=180
    )


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MONGODB_", "USERFILES_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    dist = base / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], base
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("userfiles_db-*.whl")

    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    found = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], base)
    venv_site = Path(found.stdout.strip())
    # The dependencies come from this environment: one path line (its own .pth files, e.g. the
    # editable install of the repository, are not processed from there).
    (venv_site / "_userfiles_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        base,
    )
    assert install.returncode == 0, install.stderr
    project = base / "project"
    project.mkdir()
    return Installed(venv, python, venv / "bin" / "userfiles-migrate", venv_site, project)


def test_the_installed_package_is_the_wheel(installed: Installed) -> None:
    code = "import importlib.metadata as m, userfiles_db as u; print(u.__file__, m.version('userfiles_db'))"
    done = _run([str(installed.python), "-c", code], installed.project, _clean_env())
    assert done.returncode == 0, done.stderr
    path, version = done.stdout.split()
    assert Path(path).is_relative_to(installed.site_packages)
    assert version == userfiles_db.__version__
    bundled = installed.site_packages / "userfiles_db" / "bundled_migrations"
    assert sorted(p.stem for p in bundled.glob("0*.py")) == BUNDLED
    assert (installed.site_packages / "userfiles_db" / "schemas" / "user_files.v1.yaml").is_file()
    licenses = list(installed.site_packages.glob("userfiles_db-*.dist-info/licenses/LICENSE"))
    assert len(licenses) == 1


def test_version_status_and_up_from_the_wheel(installed: Installed, mongod: LocalMongod) -> None:
    env = _clean_env(MONGODB_URI=mongod.uri, MONGODB_DB="t_wheel_install", CI="true")
    script = str(installed.script)
    with mongod.client() as client:
        client.drop_database("t_wheel_install")
        try:
            version = _run([script, "--version"], installed.project, env)
            assert version.returncode == 0, version.stderr
            assert version.stdout.split()[-1] == userfiles_db.__version__
            assert len(version.stdout.splitlines()) == 1

            status = _run([script, "status", "--json"], installed.project, env)
            assert status.returncode == 0, status.stderr
            assert [entry["id"] for entry in json.loads(status.stdout)["pending"]] == BUNDLED

            # `up --json` once the CLI has it (issue 11 item 2), plain `up` before
            help_text = _run([script, "up", "--help"], installed.project, env).stdout
            as_json = "--json" in help_text
            up = _run([script, "up", *(["--json"] if as_json else [])], installed.project, env)
            assert up.returncode == 0, up.stderr
            if as_json:
                result: dict[str, Any] = json.loads(up.stdout)
                assert isinstance(result, dict)
            db = client["t_wheel_install"]
            assert sorted(db["migrations_changelog"].distinct("_id", {"state": "applied"})) == BUNDLED
            assert db["user_files"].index_information()["expires_at_1"]["expireAfterSeconds"] == 0

            check = _run([script, "status", "--check"], installed.project, env)
            assert check.returncode == 0, check.stdout + check.stderr
        finally:
            client.drop_database("t_wheel_install")


def test_new_writes_into_the_project_not_the_package(installed: Installed) -> None:
    bundled = installed.site_packages / "userfiles_db" / "bundled_migrations"
    before = sorted(p.name for p in bundled.iterdir())
    done = _run(
        [str(installed.script), "new", "add_checksum_field"], installed.project, _clean_env(CI="true")
    )
    after = sorted(p.name for p in bundled.iterdir())
    for name in set(after) - set(before):  # leave the shared venv as it was for other tests
        (bundled / name).unlink()
    assert after == before, "new wrote into the installed package"
    assert done.returncode == 0, done.stderr
    created = sorted((installed.project / "migrations").glob("*_add_checksum_field.py"))
    assert len(created) == 1, done.stdout + done.stderr
    text = created[0].read_text()
    assert "def up(db" in text
    assert "def down(db" in text
