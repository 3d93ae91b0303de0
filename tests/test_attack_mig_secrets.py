"""Attack: secrets a MongoDB URI carries in its *options*, not in its user part.

``tlsCertificateKeyFilePassword`` (the password of the client's TLS key file) and an AWS session
token in ``authMechanismProperties`` were printed as they were: in the target line, in every
error naming the URI, and in JSON logs. "No password in any output" covers them too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pymongo.database import Database

from userfiles_db.cli import Output, State, cli
from userfiles_db.local_server import LocalMongod
from userfiles_db.migrate.config import redact, redact_uri

SECRET = "Hunter2%2Fkey"  # percent-encoded: its decoded form must not appear either
OPTIONS = [
    f"tlsCertificateKeyFilePassword={SECRET}",
    f"tls=true&tlsCertificateKeyFilePassword={SECRET}&tlsInsecure=true",
    f"authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:{SECRET}",
    f"authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN%3A{SECRET}",
]


@pytest.mark.parametrize("option", OPTIONS)
def test_redact_uri_masks_secrets_in_options(option: str) -> None:
    uri = f"mongodb://bob:pw9876@h.example:27017/?{option}"
    shown = redact_uri(uri)
    assert "Hunter2" not in shown
    assert "pw9876" not in shown
    assert "***" in shown
    assert "Hunter2" not in redact(f"failed: {uri} and key Hunter2/key", uri)


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("option", OPTIONS)
def test_no_option_secret_in_any_output(
    mongod: LocalMongod, real_db: Database[Any], tmp_path: Path, option: str, log_format: str
) -> None:
    environ = {
        "MONGODB_URI": f"{mongod.uri}&{option}",
        "MONGODB_DB": real_db.name,
        "USERFILES_SERVER_TIMEOUT_SECONDS": "1",
    }
    state = State(environ=environ, cwd=tmp_path, interactive=False, output=Output(log_format, 1))
    result = CliRunner().invoke(cli, ["-v", "status", "--json"], obj=state, catch_exceptions=False)
    output = result.stdout + result.stderr
    assert result.exit_code in (0, 1), output
    assert "Hunter2" not in output
    assert json.loads(result.stdout)["exit_code"] == result.exit_code
    assert "***" in result.stderr
