"""``WIDGET_*`` settings: parsed from the environment, typed, and refused clearly when wrong."""

from __future__ import annotations

import multiprocessing
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ALLY, CLUSTER, SECRET, STATEMENT
from flask import Flask
from servers import RedisServer

from widget import create_app
from widget.cli import main
from widget.config import SETTINGS, ConfigError, demo_secret, load_config
from widget.proxies import parse_trusted_proxies

TOKEN = "12345678901234567890123456789012"  # 32 digits: JSON-parses to an int, must stay text


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No WIDGET_* variable from the outer environment; data dir in a temp folder."""
    for name in list(os.environ):
        if name.startswith("WIDGET_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("WIDGET_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


@pytest.fixture
def started() -> Iterator[list[Flask]]:
    """Apps a test builds with create_app() itself: their background threads (live counts,
    sealing) end with the test, as the make_app fixture's do."""
    apps: list[Flask] = []
    yield apps
    for app in apps:
        app.extensions["undersign.live"].stop()


def loaded(**config: object) -> Flask:
    app = Flask("config-test")
    load_config(app, config or None)
    return app


def test_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = loaded().config
    assert config["REDIS_URL"] == ""
    assert config["REDIS_CLUSTER"] is False
    assert config["ALLOWED_ORIGINS"] == ()
    assert config["ADMIN_TOKEN"] == ""
    assert config["ENDORSE_LIMIT"] == "5/minute;50/day"
    assert str(config["TRUSTED_PROXIES"]) == "127.0.0.0/8,::1"  # loopback only
    assert config["STATEMENTS_DIR"] == ""
    assert config["PUBLIC_URL"] == ""
    assert config["ALLOWED_HOSTS"] == ()
    assert config["TRUSTED_HOSTS"] is None  # every Host accepted (development)
    assert config["METRICS_PUBLIC"] is False
    assert config["DATA_DIR"] == str((tmp_path / "data").resolve())
    assert config["MAX_CONTENT_LENGTH"] == 16 * 1024


def test_default_data_dir_is_var(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.delenv("WIDGET_DATA_DIR")
    clean_env.chdir(tmp_path)
    config = loaded(SECRET_KEY=SECRET).config
    assert config["DATA_DIR"] == str((tmp_path / "var").resolve())


def test_environment_is_parsed_and_coerced(
    clean_env: pytest.MonkeyPatch, redis_server: RedisServer, tmp_path: Path, started: list[Flask]
) -> None:
    env = {
        "WIDGET_REDIS_URL": redis_server.url,
        "WIDGET_SECRET_KEY": "1234567890" * 4,  # JSON-parses to an int: must stay text
        "WIDGET_ALLOWED_ORIGINS": " https://Ally.Example/ ,https://b.example:8443,, ",
        "WIDGET_ADMIN_TOKEN": TOKEN,
        "WIDGET_ENDORSE_LIMIT": "3/minute;10/day",
        "WIDGET_TRUSTED_PROXIES": "10.0.0.2, 172.16.0.0/12,2001:db8::/32",
        "WIDGET_ALLOWED_HOSTS": " Sign.Example.NET ,.example.com",
        "WIDGET_STATEMENTS_DIR": str(tmp_path),
        "WIDGET_PUBLIC_URL": "https://sign.example.org/",
        "WIDGET_METRICS_PUBLIC": "yes",
        "WIDGET_REDIS_CLUSTER": "true" if CLUSTER else "false",
    }
    for name, value in env.items():
        clean_env.setenv(name, value)
    app = create_app()
    started.append(app)
    config = app.config
    assert config["REDIS_URL"] == redis_server.url
    assert config["SECRET_KEY"] == "1234567890" * 4
    assert config["ALLOWED_ORIGINS"] == ("https://ally.example", "https://b.example:8443")
    assert config["ADMIN_TOKEN"] == TOKEN
    assert config["ENDORSE_LIMIT"] == "3/minute;10/day"
    assert str(config["TRUSTED_PROXIES"]) == "10.0.0.2,172.16.0.0/12,2001:db8::/32"
    assert config["TRUSTED_PROXIES"].trusts("172.20.0.1")
    assert not config["TRUSTED_PROXIES"].trusts("127.0.0.1")
    assert config["STATEMENTS_DIR"] == str(tmp_path)
    assert config["PUBLIC_URL"] == "https://sign.example.org"
    assert config["ALLOWED_HOSTS"] == ("sign.example.net", ".example.com")
    assert config["TRUSTED_HOSTS"] == [
        "sign.example.org",
        "sign.example.net",
        ".example.com",
        "localhost",
        "127.0.0.1",
    ]
    assert config["METRICS_PUBLIC"] is True
    assert config["REDIS_CLUSTER"] is CLUSTER

    # The parsed values are the ones the app acts on.
    client = app.test_client()
    ok = client.get(f"/api/v1/statements/{STATEMENT}", headers={"Origin": "https://b.example:8443"})
    assert ok.headers["Access-Control-Allow-Origin"] == "https://b.example:8443"
    assert ok.get_json()["url"] == f"https://sign.example.org/s/{STATEMENT}"
    refused = client.get(f"/api/v1/statements/{STATEMENT}", headers={"Origin": "https://c.example"})
    assert refused.status_code == 403


def test_test_config_overrides_environment(
    clean_env: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    clean_env.setenv("WIDGET_ENDORSE_LIMIT", "1/minute")
    clean_env.setenv("WIDGET_TRUSTED_PROXIES", "10.0.0.3")
    config = loaded(
        REDIS_URL=redis_server.url, SECRET_KEY=SECRET, TRUSTED_PROXIES="10.0.0.1"
    ).config
    assert config["ENDORSE_LIMIT"] == "1/minute"
    assert str(config["TRUSTED_PROXIES"]) == "10.0.0.1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("on", True), ("0", False), ("false", False), ("no", False)],
)
def test_booleans(clean_env: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    clean_env.setenv("WIDGET_METRICS_PUBLIC", value)
    assert loaded(SECRET_KEY=SECRET).config["METRICS_PUBLIC"] is expected


def test_star_allows_any_origin(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("WIDGET_ALLOWED_ORIGINS", "*")
    assert loaded(SECRET_KEY=SECRET).config["ALLOWED_ORIGINS"] == ("*",)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("ALLOWED_ORIGINS", "ally.example", "is not an origin like https://ally.example"),
        ("ALLOWED_ORIGINS", "https://ally.example, ftp://files.example", "ftp://files.example"),
        ("ALLOWED_ORIGINS", "https://ally.example/page", "has a path"),
        ("TRUSTED_PROXIES", "two", "'two' is not an IP address or network"),
        ("TRUSTED_PROXIES", "1.5", "1.5"),
        ("TRUSTED_PROXIES", "true", "expected proxy addresses"),
        ("TRUSTED_PROXIES", "10.0.0.1, proxy.example", "'proxy.example' is not an IP address"),
        ("TRUSTED_PROXIES", "10.0.0.0/33", "'10.0.0.0/33'"),
        ("ALLOWED_HOSTS", "https://sign.example.org", "is not a host name"),
        ("ALLOWED_HOSTS", "sign.example.org:8443", "no scheme, port or path"),
        ("PUBLIC_URL", "sign.example.org", "is not a base URL"),
        ("PUBLIC_URL", "https://sign.example.org?x=1", "is not a base URL"),
        ("PUBLIC_URL", "https://sign.example.org#frag", "is not a base URL"),
        ("PUBLIC_URL", "https://sign.example.org/petitions", "(no path)"),
        ("ALLOWED_ORIGINS", "https://a b", "is not an origin like https://ally.example"),
        ("ALLOWED_ORIGINS", "https://ally.example:99999", "is not an origin"),
        ("ALLOWED_ORIGINS", "https://ally.example?x=1", "is not an origin"),
        ("STREAMS_PER_CLIENT", "0", "at least 1"),
        ("STREAMS_PER_WORKER", "-1", "at least 0"),
        ("REDIS_CLUSTER", "maybe", "true or false"),
        ("REDIS_URL", "http://user:hunter2@cache.example:6379", "redis://"),
    ],
)
def test_bad_setting_is_a_config_error_naming_it(
    clean_env: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    clean_env.setenv(f"WIDGET_{name}", value)
    clean_env.setenv("WIDGET_SECRET_KEY", SECRET)
    with pytest.raises(ConfigError) as info:
        create_app()
    text = str(info.value)
    assert text.startswith(f"WIDGET_{name}: "), text
    assert message in text
    assert "hunter2" not in text


@pytest.mark.parametrize("length", [1, 21, 31])
def test_short_admin_token_is_a_startup_error(clean_env: pytest.MonkeyPatch, length: int) -> None:
    token = "Q" * length
    clean_env.setenv("WIDGET_ADMIN_TOKEN", token)
    with pytest.raises(ConfigError) as info:
        loaded(SECRET_KEY=SECRET)
    text = str(info.value)
    assert text.startswith("WIDGET_ADMIN_TOKEN: must be at least 32 characters"), text
    assert f"got {length} " in text
    assert token not in text


@pytest.mark.parametrize("length", [1, 20, 31])
def test_short_secret_key_is_a_startup_error(clean_env: pytest.MonkeyPatch, length: int) -> None:
    """Email HMACs and hashed addresses are only as strong as this key: one character had
    been accepted."""
    secret = "#" * length
    with pytest.raises(ConfigError) as info:
        loaded(SECRET_KEY=secret)
    text = str(info.value)
    assert text.startswith("WIDGET_SECRET_KEY: must be at least 32 characters"), text
    assert f"got {length} " in text and "#" not in text  # the message never shows the key


def test_origins_and_public_urls_that_are_fine(clean_env: pytest.MonkeyPatch) -> None:
    origins = (
        "https://ally.example, http://localhost:8080, http://127.0.0.1:9000, http://[::1]:8000"
    )
    config = loaded(
        SECRET_KEY=SECRET, ALLOWED_ORIGINS=origins, PUBLIC_URL="https://Sign.Example.org:8443/"
    ).config
    assert len(config["ALLOWED_ORIGINS"]) == 4
    assert config["PUBLIC_URL"] == "https://Sign.Example.org:8443"


def test_admin_token_of_32_characters_or_none_starts(clean_env: pytest.MonkeyPatch) -> None:
    assert loaded(SECRET_KEY=SECRET, ADMIN_TOKEN="").config["ADMIN_TOKEN"] == ""  # disabled
    assert loaded(SECRET_KEY=SECRET, ADMIN_TOKEN=TOKEN).config["ADMIN_TOKEN"] == TOKEN


@pytest.mark.parametrize(
    ("value", "trusted", "untrusted", "hops"),
    [
        ("127.0.0.1/8, ::1", ["127.0.0.1", "127.9.9.9", "::1"], ["10.0.0.1", "::2"], None),
        ("", [], ["127.0.0.1", "::1"], None),
        (0, [], ["127.0.0.1"], None),
        ("0", [], ["127.0.0.1"], None),
        # The old meaning, a hop count: loopback peers, at most that many hops.
        ("1", ["127.0.0.1", "::1"], ["172.17.0.1"], 1),
        (2, ["127.0.0.1"], ["192.168.0.1"], 2),
        (["192.0.2.7", "2001:db8::/64"], ["192.0.2.7", "2001:db8::5"], ["192.0.2.8"], None),
    ],
)
def test_trusted_proxies_are_addresses_or_a_hop_count(
    value: object, trusted: list[str], untrusted: list[str], hops: int | None
) -> None:
    proxies = parse_trusted_proxies(value)
    assert all(proxies.trusts(a) for a in trusted)
    assert not any(proxies.trusts(a) for a in untrusted)
    assert not proxies.trusts("not an address") and not proxies.trusts(None)
    assert proxies.max_hops == hops


def test_missing_secret_key_with_redis_url_is_a_startup_error(
    clean_env: pytest.MonkeyPatch, redis_server: RedisServer, tmp_path: Path
) -> None:
    clean_env.setenv("WIDGET_REDIS_URL", redis_server.url)
    with pytest.raises(ConfigError, match="WIDGET_SECRET_KEY is required"):
        create_app()
    assert not (tmp_path / "data" / "secret_key").exists()


def test_embedded_mode_generates_and_keeps_a_secret(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = loaded().config["SECRET_KEY"]
    path = data / "secret_key"
    assert path.read_text().strip() == first
    assert len(first) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(data.iterdir()) == [path]  # no temp file left behind
    assert loaded().config["SECRET_KEY"] == first  # kept across restarts
    clean_env.setenv("WIDGET_DATA_DIR", str(tmp_path / "other"))
    assert loaded().config["SECRET_KEY"] != first


def test_empty_secret_file_is_an_error(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret_key").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        loaded()


def test_workers_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool:
        secrets = pool.map(demo_secret, [tmp_path] * 8)
    assert len(set(secrets)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret_key"]


def test_config_command_lists_every_setting() -> None:
    result = CliRunner().invoke(main, ["config"])
    assert result.exit_code == 0, result.output
    for setting in SETTINGS:
        assert f"`{setting.env}`" in result.output
    assert "`5/minute;50/day`" in result.output


def test_allowlist_from_environment_reaches_cors(
    clean_env: pytest.MonkeyPatch, redis_server: RedisServer, started: list[Flask]
) -> None:
    clean_env.setenv("WIDGET_REDIS_URL", redis_server.url)
    clean_env.setenv("WIDGET_SECRET_KEY", SECRET)
    clean_env.setenv("WIDGET_ALLOWED_ORIGINS", ALLY)
    started.append(create_app())
    client = started[-1].test_client()
    response = client.get(f"/api/v1/statements/{STATEMENT}/count", headers={"Origin": ALLY})
    assert response.headers["Access-Control-Allow-Origin"] == ALLY


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {line.split("|")[1].strip(" `") for line in readme.splitlines() if "| `WIDGET_" in line}
    assert {s.env for s in SETTINGS} <= rows
