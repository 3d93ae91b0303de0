"""``python migrate.py`` and ``python -m userfiles_db`` from a clone with a NORMAL install.

A real non-editable install (pip builds the package from a copy of the repository) goes into a
fresh virtual environment; run from the clone, the clone's ``userfiles_db/`` shadows it, and the
mapped data packages (``userfiles_db.schemas``, ``userfiles_db.bundled_migrations``) must still
be found.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pymongo
import pytest
import yaml
from pymongo.database import Database

from userfiles_db.local_server import LocalMongod

REPO = Path(__file__).parent.parent
IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "venv", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis", "build", "dist",
    "tests", "bench", ".userfiles-mongod", "docs",
)  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a copy of the clone, the python of a venv where that copy is installed non-editable)."""
    root = tmp_path_factory.mktemp("normal-install")
    clone = root / "clone"
    shutil.copytree(REPO, clone, ignore=IGNORE)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()
    )  # fmt: skip
    # The dependencies come from this environment (a path line in a .pth file, which does not
    # run this environment's own .pth hooks: its editable install of userfiles_db stays out).
    dependencies = {str(Path(module.__file__ or "").parent.parent) for module in (pymongo, click, yaml)}
    (site / "dependencies.pth").write_text("\n".join(sorted(dependencies)) + "\n")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(clone)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    assert (site / "userfiles_db" / "bundled_migrations" / "0001_create_user_files.py").is_file()
    shutil.rmtree(clone / "build", ignore_errors=True)
    return clone, python


def _run(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_migrate_py_and_python_m_work_from_a_clone_with_a_normal_install(
    installed: tuple[Path, Path], mongod: LocalMongod, real_db: Database[Any], tmp_path: Path
) -> None:
    clone, python = installed
    target = ("--uri", mongod.uri, "--db", real_db.name)
    where = _run(python, clone, "-c", "import userfiles_db; print(userfiles_db.__file__)")
    assert where.stdout.strip() == str(clone / "userfiles_db" / "__init__.py")  # the clone shadows it

    status = _run(python, clone, "migrate.py", *target, "status", "--check")
    assert status.returncode == 3, status.stderr
    assert status.stdout.splitlines()[-1] == f"Database {real_db.name}: 0 applied, 4 pending."
    up = _run(python, clone, "migrate.py", *target, "up")
    assert up.returncode == 0, up.stderr
    assert sorted(real_db["migrations_changelog"].distinct("_id"))[-1] == "0004_enforce_validator"

    root = tmp_path / "files"
    root.mkdir()
    sweep = _run(python, clone, "-m", "userfiles_db", "sweep", "--root", str(root), *target[:2],
                 "--db", real_db.name, "--dry-run")  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr
    assert sweep.stdout.startswith(f"Swept {root}:")

    # elsewhere, the installed package itself (with its mapped data packages) is used
    elsewhere = _run(python, tmp_path, "-m", "userfiles_db.cli", *target, "check")
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert elsewhere.stdout == "No drift: the collection matches the declared schema.\n"
