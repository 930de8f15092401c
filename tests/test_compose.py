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


# -- docker-compose.cluster.yml: two app instances on a Redis Cluster behind a proxy --------

CLUSTER_COMPOSE = ROOT / "docker-compose.cluster.yml"
NODES = [f"redis-{n}" for n in range(1, 7)]


@pytest.fixture(scope="module")
def cluster_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CLUSTER_COMPOSE.read_text())
    return data


def flags_of(command: list[str]) -> dict[str, str]:
    return dict(zip(command[1::2], command[2::2], strict=False))


def test_cluster_file_has_six_nodes_an_init_job_two_apps_and_a_proxy(
    cluster_compose: dict[str, Any],
) -> None:
    services = cluster_compose["services"]
    assert set(services) == {*NODES, "cluster-init", "app-1", "app-2", "worker", "proxy"}
    worker = services["worker"]
    assert words(worker["command"]) == ["undersign", "worker"]
    assert worker["environment"] == services["app-1"]["environment"]  # the same settings
    addresses = set()
    for name in NODES:
        node = services[name]
        assert node["image"].startswith("redis:7")
        command = words(node["command"])
        assert command[0] == "redis-server"
        flags = flags_of(command)
        assert flags["--cluster-enabled"] == "yes"
        assert flags["--appendonly"] == "yes" and flags["--appendfsync"] == "everysec"
        assert int(flags["--cluster-node-timeout"]) >= 2000
        assert flags["--cluster-replica-validity-factor"] == "0"
        assert "ports" not in node  # only the apps reach Redis
        (volume,) = node["volumes"]
        assert volume.split(":")[0] in cluster_compose["volumes"]
        assert words(node["healthcheck"]["test"])[-1] == "ping"
        addresses.add(node["networks"]["undersign"]["ipv4_address"])
    assert len(addresses) == 6
    init = services["cluster-init"]
    assert init["restart"] == "no"
    assert {n: c["condition"] for n, c in init["depends_on"].items()} == dict.fromkeys(
        NODES, "service_healthy"
    )
    script = " ".join(words(init["command"]))
    assert "--cluster create" in script and "--cluster-replicas 1" in script
    assert all(f"{a}:6379" in script for a in addresses)


def test_cluster_apps_run_the_production_config_on_the_cluster(
    cluster_compose: dict[str, Any],
) -> None:
    services = cluster_compose["services"]
    for name in ("app-1", "app-2"):
        app = services[name]
        assert words(app["command"]) == GUNICORN
        assert app["depends_on"]["cluster-init"]["condition"] == "service_completed_successfully"
        env = app["environment"]
        assert env["WIDGET_REDIS_CLUSTER"] == "true"
        host = env["WIDGET_REDIS_URL"].split("//")[1].split(":")[0]
        assert host in {services[n]["networks"]["undersign"]["ipv4_address"] for n in NODES}
        assert env["WIDGET_REDIS_WAIT_REPLICAS"] == "${WIDGET_REDIS_WAIT_REPLICAS:-1}"
        for secret in ("WIDGET_SECRET_KEY", "WIDGET_ADMIN_TOKEN"):
            assert re.fullmatch(r"\$\{" + secret + r":\?[^}]+\}", env[secret])
        assert "ports" not in app  # only through the proxy
        assert app["read_only"] is True and app["cap_drop"] == ["ALL"]
    known = {s.env for s in SETTINGS}
    env = services["app-1"]["environment"]
    assert not {k for k in env if k.startswith("WIDGET_")} - known
    lines = CLUSTER_COMPOSE.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.match(r"\s+WIDGET_\w+:", line):
            assert lines[index - 1].strip().startswith("#"), line


def test_cluster_proxy_balances_both_instances_and_streams_unbuffered(
    cluster_compose: dict[str, Any],
) -> None:
    proxy = cluster_compose["services"]["proxy"]
    assert proxy["ports"] == ["127.0.0.1:8000:8000"]
    assert set(proxy["depends_on"]) == {"app-1", "app-2"}
    (mount,) = proxy["volumes"]
    source = mount.split(":")[0]
    conf = (ROOT / source).read_text()
    upstream = re.search(r"upstream undersign \{(.*?)\}", conf, re.S)
    assert upstream and "app-1:8000" in upstream.group(1) and "app-2:8000" in upstream.group(1)
    events = conf.split("events$", 1)[1]
    assert "proxy_buffering off;" in events and "proxy_read_timeout 1h;" in events
    assert "access_log off;" in conf


@pytest.mark.skipif(not docker_compose_available(), reason="no `docker compose` client here")
def test_docker_compose_config_accepts_the_cluster_file() -> None:
    docker = shutil.which("docker")
    assert docker is not None
    base = {"PATH": f"{Path(docker).parent}:/usr/bin:/bin", "HOME": str(Path.home())}
    command = ["docker", "compose", "--env-file", "/dev/null", "-f", str(CLUSTER_COMPOSE)]
    secrets = {"WIDGET_SECRET_KEY": "x" * 48, "WIDGET_ADMIN_TOKEN": "y" * 32}
    result = subprocess.run(
        [*command, "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **secrets},
    )
    assert result.returncode == 0, result.stderr
