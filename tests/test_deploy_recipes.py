"""The deploy recipes in deploy/: each file is parsed and the commands it names are run against this
session's mongod, with MONGODB_URI pointing there, as the orchestrator would run them.

Docker, Kubernetes, Helm and GitHub Actions are not available here, so each test plays the part of
the orchestrator for what matters to userfiles_db: the YAML's structure (order, volumes, retries,
hooks, triggers) is asserted, its variables are substituted the way the tool does (compose
interpolation, secretKeyRef, Helm values, ``${{ secrets.* }}``), and its commands are executed as
processes, in the order the orchestrator would, asserting exit codes and the database's state.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from pymongo.database import Database

from userfiles_db import UserFiles
from userfiles_db.local_server import LocalMongod

ROOT = Path(__file__).parent.parent
DEPLOY = ROOT / "deploy"
BOT_DB = "chatgpt_discord_bot"
FILES_ROOT = "/tmp/bot_code_interpreter/user_files"
BUNDLED = ["0001_create_user_files", "0002_adopt_legacy_records", "0003_enable_ttl", "0004_enforce_validator"]


@pytest.fixture
def bot_db(mongod: LocalMongod) -> Iterator[Database[Any]]:
    """The bot's database on the session's server, empty before and dropped after the test."""
    with mongod.client(tz_aware=True) as client:
        client.drop_database(BOT_DB)
        yield client[BOT_DB]
        client.drop_database(BOT_DB)


def base_env() -> dict[str, str]:
    """The environment of a container or CI runner: this interpreter's bin directory first on PATH
    (it holds ``python`` and ``userfiles-migrate``), no userfiles_db settings inherited, CI=true."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MONGODB_", "USERFILES_", "FILE_EXPIRATION", "MAX_FILES"))
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["CI"] = "true"
    return env


def run(argv: list[str], env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=dict(env), cwd=cwd, capture_output=True, text=True, timeout=120)


def applied(db: Database[Any]) -> list[str]:
    return sorted(d["_id"] for d in db["migrations_changelog"].find({"state": "applied"}))


def applied_times(db: Database[Any]) -> dict[str, Any]:
    """When each migration was applied: a run that applies nothing leaves this as it was."""
    return {d["_id"]: d["applied_at"] for d in db["migrations_changelog"].find({"state": "applied"})}


def assert_fully_migrated(db: Database[Any]) -> None:
    assert applied(db) == BUNDLED
    options = db["user_files"].options()
    assert (options["validationLevel"], options["validationAction"]) == ("strict", "error")
    assert db["user_files"].index_information()["expires_at_1"]["expireAfterSeconds"] == 0


# --------------------------------------------------------------------------------------------
# docker compose


class ComposeError(Exception):
    """What ``docker compose`` refuses before starting anything."""


_COMPOSE_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_]\w*))")


def compose_interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation on every string of a parsed compose file: ``$$``, ``$VAR``,
    ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``."""
    if isinstance(value, dict):
        return {key: compose_interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [compose_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        if match["plain"]:
            return env.get(match["plain"], "")
        parsed = re.fullmatch(r"([A-Za-z_]\w*)(?:(:?[-?])(.*))?", match["braced"], re.S)
        if parsed is None:
            raise ComposeError(f"invalid interpolation format ${{{match['braced']}}}")
        name, operator, argument = parsed.groups()
        current = env.get(name)
        if operator is None:
            return current or ""
        missing = current is None or (operator.startswith(":") and current == "")
        if operator.endswith("-"):
            return argument if missing else str(current)
        if missing:
            raise ComposeError(f"required variable {name} is missing a value: {argument}")
        return str(current)

    return _COMPOSE_VAR.sub(substitute, value)


@dataclass
class Service:
    name: str
    argv: list[str]
    environment: dict[str, str]
    mounts: dict[str, str]  # container path -> volume name


def compose_services(env: Mapping[str, str]) -> dict[str, Service]:
    raw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    config = compose_interpolate(raw, env)
    services: dict[str, Service] = {}
    for name, spec in config["services"].items():

        def words(value: Any) -> list[str]:
            if value is None:
                return []
            return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

        environment = spec.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        mounts = {}
        for volume in spec.get("volumes", []):
            source, target = volume.split(":")[:2]
            mounts[target] = source
        services[name] = Service(
            name,
            words(spec.get("entrypoint")) + words(spec.get("command")),
            {key: str(value) for key, value in environment.items()},
            mounts,
        )
    return services


def fake_sleep(tmp_path: Path) -> tuple[Path, Path]:
    """A ``sleep`` that records its argument and sends SIGTERM to the shell that started it, as
    ``docker compose stop`` would during the pause: the sweep loop runs exactly once."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    log = tmp_path / "sleep.log"
    script = bin_dir / "sleep"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nkill -TERM "$PPID"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return bin_dir, log


def test_compose_structure_migrate_first_and_a_shared_files_volume() -> None:
    config = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = config["services"]
    assert set(services) == {"migrate", "bot", "sweep"}
    for waiting in ("bot", "sweep"):
        assert services[waiting]["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert services["migrate"]["restart"] == "no"  # a one-off: it must not loop
    assert f"user_files:{FILES_ROOT}" in services["bot"]["volumes"]
    assert f"user_files:{FILES_ROOT}" in services["sweep"]["volumes"]
    assert "user_files" in config["volumes"]
    for spec in services.values():
        assert spec["environment"]["MONGODB_URI"].startswith("${MONGODB_URI")
        assert spec["image"] == services["bot"]["image"]  # the bot's image carries userfiles_db


def test_compose_refuses_to_start_without_mongodb_uri() -> None:
    with pytest.raises(ComposeError, match="MONGODB_URI"):
        compose_services({})


def test_compose_migrate_then_bot_then_sweep(
    bot_db: Database[Any], mongod: LocalMongod, tmp_path: Path
) -> None:
    env = base_env()
    services = compose_services({"MONGODB_URI": mongod.uri})
    volumes = {"user_files": tmp_path / "volumes" / "user_files"}
    volumes["user_files"].mkdir(parents=True)

    def container(service: Service, extra_path: Path | None = None) -> tuple[list[str], dict[str, str]]:
        """argv and environment with the service's volumes mapped to host directories."""
        argv = service.argv
        for target, volume in service.mounts.items():
            argv = [arg.replace(target, str(volumes[volume])) for arg in argv]
        environment = {**env, **service.environment}
        if extra_path is not None:
            environment["PATH"] = f"{extra_path}{os.pathsep}{environment['PATH']}"
        return argv, environment

    # docker compose up: the one-off migrate service first
    argv, environment = container(services["migrate"])
    assert argv[:1] == ["userfiles-migrate"]
    assert argv[-1] == "up"
    first = run(argv, environment, tmp_path)
    assert first.returncode == 0, first.stderr
    assert_fully_migrated(bot_db)

    # it exited 0 (service_completed_successfully): the bot starts and writes into the volume
    bot_root = Path(volumes[services["bot"].mounts[FILES_ROOT]])
    (bot_root / "42").mkdir()
    kept = bot_root / "42" / "report.csv"
    kept.write_text("a,b\n")
    UserFiles(bot_db).save_user_file(
        {"file_id": "42_1_x", "user_id": 42, "filename": "report.csv", "file_type": "csv",
         "file_path": str(kept), "size": 4}
    )  # fmt: skip
    orphan = bot_root / "42" / "expired.csv"  # its record is gone (TTL), the file stays behind
    orphan.write_text("old\n")

    # the sweep service: one pass of its loop, then `docker compose stop` during its sleep. A file
    # cannot be made older than its ctime, so this run sets the grace period to 0 seconds.
    defaults = compose_services({"MONGODB_URI": mongod.uri})["sweep"].environment
    assert (defaults["SWEEP_INTERVAL_SECONDS"], defaults["SWEEP_GRACE_SECONDS"]) == ("900", "3600")
    services = compose_services({"MONGODB_URI": mongod.uri, "SWEEP_GRACE_SECONDS": "0"})
    bin_dir, sleep_log = fake_sleep(tmp_path)
    argv, environment = container(services["sweep"], extra_path=bin_dir)
    assert argv[:2] == ["/bin/sh", "-c"]
    swept = run(argv, environment, tmp_path)
    assert swept.returncode == 0, swept.stdout + swept.stderr  # the trap: a clean, prompt stop
    assert kept.exists()
    assert not orphan.exists()
    assert sleep_log.read_text().split() == ["900"]  # SWEEP_INTERVAL_SECONDS' default

    # the next `docker compose up` runs migrate again: nothing to do, exit 0, the bot starts
    before = applied_times(bot_db)
    argv, environment = container(services["migrate"])
    again = run(argv, environment, tmp_path)
    assert again.returncode == 0, again.stderr
    assert applied_times(bot_db) == before
    assert_fully_migrated(bot_db)


# --------------------------------------------------------------------------------------------
# Kubernetes Job and Helm hook


def job_process(
    job: dict[str, Any], secrets: Mapping[tuple[str, str], str]
) -> tuple[list[str], dict[str, str]]:
    """What the Job's only container runs: command + args, and its environment (secretKeyRef
    resolved from ``secrets``)."""
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    environment = base_env()
    for variable in container.get("env", []):
        if "value" in variable:
            environment[variable["name"]] = str(variable["value"])
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            environment[variable["name"]] = secrets[(ref["name"], ref["key"])]
    return [*container["command"], *container.get("args", [])], environment


def assert_retrying_job(job: dict[str, Any]) -> None:
    assert job["apiVersion"] == "batch/v1"
    assert job["kind"] == "Job"
    spec = job["spec"]
    assert spec["template"]["spec"]["restartPolicy"] == "Never"  # a failed pod is kept for its logs
    assert spec["backoffLimit"] >= 1  # a pod killed mid-run (OOM, drain) is retried
    assert spec["activeDeadlineSeconds"] > 0  # never hangs a rollout forever


def run_job_attempts(job: dict[str, Any], db: Database[Any], uri: str, tmp_path: Path) -> None:
    secret = job["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]
    argv, environment = job_process(job, {(secret["name"], secret["key"]): uri})
    assert argv[0] == "userfiles-migrate"
    assert argv[-1] == "up"
    first = run(argv, environment, tmp_path)
    assert first.returncode == 0, first.stderr
    assert_fully_migrated(db)
    before = applied_times(db)
    retried = run(argv, environment, tmp_path)  # a retry (or the next rollout's Job) is a no-op
    assert retried.returncode == 0, retried.stderr
    assert applied_times(db) == before


def test_kubernetes_job(bot_db: Database[Any], mongod: LocalMongod, tmp_path: Path) -> None:
    (job,) = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "migrate-job.yaml").read_text()))
    assert_retrying_job(job)
    run_job_attempts(job, bot_db, mongod.uri, tmp_path)


def helm_render(template: str, values: Mapping[str, Any], release: str) -> str:
    """The subset of Helm's templating the chart uses: ``{{ .Values.a.b }}``, ``{{ .Release.Name }}``
    and the ``quote`` function. Anything else fails the test, so the chart stays within it."""

    def substitute(match: re.Match[str]) -> str:
        head, *functions = (part.strip() for part in match[1].split("|"))
        value: Any
        if head == ".Release.Name":
            value = release
        elif head.startswith(".Values."):
            value = values
            for key in head.removeprefix(".Values.").split("."):
                value = value[key]
        else:
            raise AssertionError(f"unsupported template expression {match[0]!r}")
        for function in functions:
            if function != "quote":
                raise AssertionError(f"unsupported template function {function!r}")
            value = json.dumps(str(value))
        return str(value)

    return re.sub(r"\{\{-?\s*(.*?)\s*-?\}\}", substitute, template)


def test_helm_pre_upgrade_hook(bot_db: Database[Any], mongod: LocalMongod, tmp_path: Path) -> None:
    chart = DEPLOY / "helm" / "userfiles-migrate"
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    assert meta["apiVersion"] == "v2"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    values = yaml.safe_load((chart / "values.yaml").read_text())
    rendered = helm_render((chart / "templates" / "migrate-hook.yaml").read_text(), values, "bot")
    (job,) = list(yaml.safe_load_all(rendered))
    annotations = job["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"pre-install", "pre-upgrade"}
    assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    assert job["metadata"]["name"] == "bot-userfiles-migrate"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["--db", BOT_DB, "up"]
    assert_retrying_job(job)
    run_job_attempts(job, bot_db, mongod.uri, tmp_path)


# --------------------------------------------------------------------------------------------
# GitHub Actions


def workflow() -> dict[str, Any]:
    loaded: dict[Any, Any] = yaml.safe_load((DEPLOY / "github-actions" / "userfiles-migrate.yml").read_text())
    if True in loaded:  # YAML 1.1 reads the key `on` as a boolean
        loaded["on"] = loaded.pop(True)
    return loaded


def gha_render(text: str, context: Mapping[str, str]) -> str:
    """``${{ secrets.NAME }}`` and ``${{ github.event_name }}``; any other expression fails."""

    def substitute(match: re.Match[str]) -> str:
        expression = match[1].strip()
        if expression not in context:
            raise AssertionError(f"unsupported expression ${{{{ {expression} }}}}")
        return context[expression]

    return re.sub(r"\$\{\{(.*?)\}\}", substitute, text)


def gha_condition(expression: str, event: str) -> bool:
    found = re.fullmatch(r"\s*github\.event_name\s*(==|!=)\s*'([a-z_]+)'\s*", expression)
    assert found is not None, f"unsupported if: {expression!r}"
    return (event == found[2]) == (found[1] == "==")


@dataclass
class StepResult:
    name: str
    returncode: int
    output: str


def run_workflow(event: str, uri: str, tmp_path: Path) -> list[StepResult]:
    """Run the jobs that ``event`` triggers, their ``run:`` steps in order with GitHub's default
    shell (``bash --noprofile --norc -eo pipefail``), stopping a job at its first failing step.
    Checkout, setup-python and the install step are what this test environment already is."""
    config = workflow()
    # The test server stands for both users (the deploy's and the read-only one of pull requests).
    context = {"secrets.MONGODB_URI": uri, "secrets.MONGODB_URI_READONLY": uri, "github.event_name": event}
    results: list[StepResult] = []
    for job in config["jobs"].values():
        if "if" in job and not gha_condition(job["if"], event):
            continue
        for step in job["steps"]:
            if "run" not in step or step["run"].startswith("python -m pip install"):
                continue
            environment = base_env()
            for scope in (config.get("env", {}), job.get("env", {}), step.get("env", {})):
                environment.update({key: gha_render(str(value), context) for key, value in scope.items()})
            script = tmp_path / "step.sh"
            script.write_text(gha_render(step["run"], context))
            done = run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], environment, tmp_path
            )
            results.append(
                StepResult(step.get("name", step["run"]), done.returncode, done.stdout + done.stderr)
            )
            if done.returncode != 0:
                break
    return results


def test_github_actions_triggers() -> None:
    config = workflow()
    assert {"pull_request", "push"} <= set(config["on"])
    jobs = config["jobs"]
    assert gha_condition(jobs["check"]["if"], "pull_request")
    assert not gha_condition(jobs["migrate"]["if"], "pull_request")
    assert gha_condition(jobs["migrate"]["if"], "push")
    assert jobs["migrate"]["concurrency"] == {"group": "userfiles-migrate", "cancel-in-progress": False}
    assert config["permissions"] == {"contents": "read"}


def test_github_actions_pull_request_then_deploy(
    bot_db: Database[Any], mongod: LocalMongod, tmp_path: Path
) -> None:
    # A pull request against a database that has never been migrated: pending is not a failure
    checked = run_workflow("pull_request", mongod.uri, tmp_path)
    assert [r.returncode for r in checked] == [0, 0], checked
    assert "::notice title=userfiles_db::migrations are pending" in checked[0].output
    assert "0001_create_user_files" in checked[1].output  # the preview names what will run
    assert bot_db.list_collection_names() == []  # both pull-request steps only read

    # The deploy
    deployed = run_workflow("push", mongod.uri, tmp_path)
    assert [r.returncode for r in deployed] == [0], deployed
    assert_fully_migrated(bot_db)

    # The next pull request: up to date
    again = run_workflow("pull_request", mongod.uri, tmp_path)
    assert [r.returncode for r in again] == [0, 0], again
    assert "The database is up to date." in again[0].output

    # An applied migration whose file no longer matches what ran: the pull request fails, exit 4
    bot_db["migrations_changelog"].update_one({"_id": "0003_enable_ttl"}, {"$set": {"checksum": "0" * 64}})
    edited = run_workflow("pull_request", mongod.uri, tmp_path)
    assert [r.returncode for r in edited] == [4], edited
    assert "::error title=userfiles_db::status --check exited 4" in edited[0].output


def test_github_actions_without_the_secret(bot_db: Database[Any], tmp_path: Path) -> None:
    # Pull requests from forks get no secrets: the check says so and passes, writing nothing
    checked = run_workflow("pull_request", "", tmp_path)
    assert [r.returncode for r in checked] == [0, 0], checked
    assert "::warning title=userfiles_db::no MONGODB_URI_READONLY secret" in checked[0].output
    # A deploy without it fails before running anything (never an embedded server in CI)
    deployed = run_workflow("push", "", tmp_path)
    assert [r.returncode for r in deployed] == [1], deployed
    assert "set the repository secret MONGODB_URI" in deployed[0].output
    assert not (tmp_path / ".userfiles-mongod").exists()
    assert bot_db.list_collection_names() == []


def test_every_recipe_is_documented() -> None:
    docs = (ROOT / "docs" / "deploying.md").read_text()
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        assert str(path.relative_to(ROOT)) in docs, path
