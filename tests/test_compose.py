"""docker-compose.yml and the Dockerfile say what the issue asks, and commit no secret."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from widget.config import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
GUNICORN = ["gunicorn", "-c", "python:widget.gunicorn_conf", "widget:create_app()"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def words(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            rows.append((instruction.upper(), rest.strip()))
    return rows


def test_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {"app", "worker", "redis"}


def test_the_worker_sends_mail_with_the_apps_image_and_settings(compose: dict[str, Any]) -> None:
    app, worker = compose["services"]["app"], compose["services"]["worker"]
    assert words(worker["command"]) == ["undersign", "worker"]
    assert worker["image"] == app["image"] and worker["build"] == app["build"]
    assert worker["environment"] == app["environment"]  # one list of settings for both
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert words(worker["healthcheck"]["test"]) == ["CMD", "undersign", "worker", "--check"]
    assert "ports" not in worker
    assert worker["read_only"] is True and worker["cap_drop"] == ["ALL"]
    assert worker["restart"] == "unless-stopped"
    # Mail settings come from the environment (the SMTP URL may carry a password).
    for name in ("WIDGET_SMTP_URL", "WIDGET_MAIL_FROM"):
        assert re.fullmatch(r"\$\{" + name + r":-\}", app["environment"][name])


def test_redis_persists_with_aof_on_a_named_volume(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    command = words(redis["command"])
    assert command[0] == "redis-server"
    flags = dict(zip(command[1::2], command[2::2], strict=False))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    (volume,) = redis["volumes"]
    name, target = volume.split(":")[:2]
    assert target == "/data"
    assert name in compose["volumes"]  # a named volume, not a host folder
    assert "ports" not in redis  # only the app reaches Redis


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service["healthcheck"]
        assert words(check["test"])[0] in ("CMD", "CMD-SHELL"), name
        assert check["interval"] and check["retries"] >= 1, name
    app_check = " ".join(words(compose["services"]["app"]["healthcheck"]["test"]))
    assert "/healthz" in app_check
    assert "ping" in words(compose["services"]["redis"]["healthcheck"]["test"])


def test_app_runs_gunicorn_with_the_production_config(compose: dict[str, Any]) -> None:
    app = compose["services"]["app"]
    assert words(app["command"]) == GUNICORN
    assert app["build"] in (".", {"context": "."})
    assert app["depends_on"]["redis"]["condition"] == "service_healthy"
    env = app["environment"]
    assert env["BIND"] == "0.0.0.0:8000"
    assert env["WIDGET_REDIS_URL"] == "redis://redis:6379/0"
    assert any(p.endswith(":8000") for p in app["ports"])


def test_secrets_come_from_the_environment(compose: dict[str, Any]) -> None:
    env = compose["services"]["app"]["environment"]
    for name in ("WIDGET_SECRET_KEY", "WIDGET_ADMIN_TOKEN"):
        assert re.fullmatch(r"\$\{" + name + r":\?[^}]+\}", env[name]), env[name]
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_every_setting_is_known_and_documented(compose: dict[str, Any]) -> None:
    env = compose["services"]["app"]["environment"]
    known = {s.env for s in SETTINGS}
    unknown = {k for k in env if k.startswith("WIDGET_")} - known
    assert not unknown, f"compose sets settings the app does not have: {unknown}"
    text = COMPOSE.read_text()
    for setting in SETTINGS:
        assert setting.env in text, f"{setting.env} is not mentioned in docker-compose.yml"
    # Every variable is explained by a comment line right above it (or on the way there).
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if re.match(r"\s+WIDGET_\w+:", line):
            assert lines[index - 1].strip().startswith("#"), line


def test_dockerfile() -> None:
    rows = dockerfile_instructions()
    assert rows[0] == ("FROM", "python:3.11-slim")
    runs = " ".join(args for instruction, args in rows if instruction == "RUN")
    assert "pip install ." in runs
    (user,) = [args for instruction, args in rows if instruction == "USER"]
    assert user not in ("root", "0")
    # USER comes after the install and before the command.
    order = [instruction for instruction, _ in rows]
    assert order.index("USER") > max(i for i, (ins, _) in enumerate(rows) if ins == "RUN")
    (cmd,) = [args for instruction, args in rows if instruction == "CMD"]
    assert words(cmd.replace('"', "").strip("[]").replace(",", " ")) == GUNICORN
    env = " ".join(args for instruction, args in rows if instruction == "ENV")
    assert "BIND=0.0.0.0:8000" in env
    # What the wheel needs (pyproject's force-include) is in the build context.
    copied = copied_sources()
    for needed in ("pyproject.toml", "README.md", "widget", "static", "embed"):
        assert needed in copied, needed
        assert (ROOT / needed).exists()


def copied_sources() -> set[str]:
    sources: set[str] = set()
    for instruction, args in dockerfile_instructions():
        if instruction == "COPY":
            sources.update(args.split()[:-1])
    return sources


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for item in (".git", ".venv", "var", "*.aof", "*.rdb", ".env"):
        assert item in ignored
    assert not copied_sources() & ignored


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not docker_compose_available(), reason="no `docker compose` client here")
def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    assert docker is not None
    base = {"PATH": f"{Path(docker).parent}:/usr/bin:/bin", "HOME": str(Path.home())}
    command = ["docker", "compose", "--env-file", "/dev/null", "-f", str(COMPOSE), "config", "-q"]
    secrets = {"WIDGET_SECRET_KEY": "x" * 48, "WIDGET_ADMIN_TOKEN": "y" * 32}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=60, env={**base, **secrets}
    )
    assert result.returncode == 0, result.stderr
    # Without the secrets, compose refuses to go on.
    missing = subprocess.run(command, capture_output=True, text=True, timeout=60, env=base)
    assert missing.returncode != 0
    assert "WIDGET_SECRET_KEY" in missing.stderr or "WIDGET_ADMIN_TOKEN" in missing.stderr
