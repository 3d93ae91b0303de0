"""The README's library example runs as written (on mongomock instead of a local server)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import mongomock
import pytest

from userfiles_db import load_schema
from userfiles_db.migrate.steps import create_indexes

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_the_library_example_runs(capsys: pytest.CaptureFixture[str]) -> None:
    section = README[README.index("## Library example") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    client: Any = mongomock.MongoClient(tz_aware=True)
    create_indexes(client["chatgpt_discord_bot"]["user_files"], load_schema())
    source = code[1].replace('MongoClient("mongodb://localhost:27017", tz_aware=True)', "client")
    exec(source, {"client": client})
    assert "size: must be at least 0, got -1" in capsys.readouterr().out
    assert client["chatgpt_discord_bot"]["user_files"].count_documents({}) == 0  # deleted at the end


def test_every_relative_link_in_the_docs_resolves() -> None:
    root = Path(__file__).parent.parent
    pages = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert not broken, broken
