"""The integration guide's patch: it applies to the bot's files, compiles, and calls only what the
mixin offers. It is regenerated from ../shared/bot-reference (read, never imported) when present."""

from __future__ import annotations

import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from userfiles_db.compat import UserFilesMixin

REPO = Path(__file__).resolve().parent.parent
PATCH = REPO / "docs" / "bot-integration.patch"
BOT = REPO.parent / "shared" / "bot-reference"
needs_bot = pytest.mark.skipif(
    not (BOT / "src").is_dir(), reason="../shared/bot-reference is not beside the repo"
)


@needs_bot
def test_the_committed_patch_is_the_generated_one() -> None:
    generated = subprocess.run(
        [sys.executable, str(REPO / "docs" / "make_bot_patch.py"), str(BOT)],
        capture_output=True, text=True, check=True, cwd=REPO,
    ).stdout  # fmt: skip
    assert generated == PATCH.read_text(encoding="utf-8", errors="surrogateescape").replace("\r\r", "\r")


@needs_bot
def test_the_patch_applies_to_the_bots_files_and_they_compile(tmp_path: Path) -> None:
    if shutil.which("patch") is None:
        pytest.skip("no patch(1) on this machine")
    copy = tmp_path / "bot"
    shutil.copytree(BOT, copy)
    for path in copy.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    done = subprocess.run(
        ["patch", "-p1", "--forward"], input=PATCH.read_bytes(), cwd=copy, capture_output=True
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    for name in (
        "src/database/db_handler.py",
        "src/utils/code_interpreter.py",
        "src/module/message_handler.py",
    ):
        py_compile.compile(str(copy / name), doraise=True)
    handler = (copy / "src/database/db_handler.py").read_text()
    assert "class DatabaseHandler(UserFilesMixin):" in handler
    assert "user_files.create_index" not in handler  # would fail with code 85 once the TTL is on
    interpreter = (copy / "src/utils/code_interpreter.py").read_text()
    assert "db.user_files.update_one" not in interpreter
    assert 'origin="generated"' in interpreter


def test_the_patch_calls_only_methods_the_mixin_has() -> None:
    added = [line[1:] for line in PATCH.read_text().splitlines() if line.startswith("+")]
    called = set()
    for line in added:
        called |= set(re.findall(r"(?:self\.db|db_handler)\.([a-z_]+)\(", line))
    assert called >= {
        "add_user_file",
        "get_user_file",
        "list_user_files",
        "remove_user_file",
        "reset_user_files",
    }
    missing = sorted(name for name in called if not callable(getattr(UserFilesMixin, name, None)))
    assert not missing, f"the patch calls {missing}, which UserFilesMixin does not have"
