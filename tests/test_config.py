from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import flowpay
from workers.core.config import load_settings
from workers.core.errors import ConfigError
from workers.core.logs import mask_conninfo


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("FLOWPAY_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_apply_without_file_or_environment() -> None:
    settings = load_settings()
    assert settings.kafka.partitions == 6
    assert settings.api.idempotency_ttl_hours == 24
    assert settings.database.url is None


def test_toml_overrides_defaults_and_environment_overrides_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('[kafka]\npartitions = 12\ntopic_prefix = "fromfile"\n')
    from_file = load_settings(config)
    assert (from_file.kafka.partitions, from_file.kafka.topic_prefix) == (12, "fromfile")

    monkeypatch.setenv("FLOWPAY_KAFKA__PARTITIONS", "3")
    both = load_settings(config)
    assert both.kafka.partitions == 3
    assert both.kafka.topic_prefix == "fromfile"


def test_config_path_comes_from_flowpay_config_then_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "flowpay.toml").write_text("[api]\nport = 9001\n")
    assert load_settings().api.port == 9001
    other = tmp_path / "other.toml"
    other.write_text("[api]\nport = 9002\n")
    monkeypatch.setenv("FLOWPAY_CONFIG", str(other))
    assert load_settings().api.port == 9002


def test_bad_value_names_the_key_and_never_echoes_the_input(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[database]\npool_max_size = "hunter2-secret"\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert "database.pool_max_size" in str(raised.value)
    assert "hunter2-secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[kafka]\npartitions = 0\n", "kafka.partitions"),
        ("[api]\nport = 70000\n", "api.port"),
        ("[kafka]\nno_such_key = 1\n", "kafka.no_such_key"),
        ('log_level = "LOUD"\n', "log_level"),
    ],
)
def test_each_bad_value_is_refused(tmp_path: Path, toml: str, key: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_settings(config)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")


def test_cli_reports_bad_config_in_one_line_with_exit_code_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[kafka]\npartitions = 'many'\n")
    done = flowpay("--config", str(config), "dev", "status")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "kafka.partitions" in lines[0]


def test_cli_reports_toml_syntax_error_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[kafka\n")
    done = flowpay("--config", str(config), "dev", "status")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# The database password in each of libpq's forms; each holds "TopSecretPw".
DATABASE_URLS = [
    "postgresql://flowpay:TopSecretPw@127.0.0.1:1/flowpay",
    "postgres://flowpay:TopSecretPw@127.0.0.1:1/flowpay",
    "postgresql://flowpay@127.0.0.1:1/flowpay?sslmode=disable&password=TopSecretPw",
    "postgresql://flowpay:TopSecretPw@127.0.0.1:1,127.0.0.2:2/flowpay",
    "host=127.0.0.1 port=1 user=flowpay password=TopSecretPw dbname=flowpay",
    "host=127.0.0.1 port=1 password='Top SecretPw \\' TopSecretPw' dbname=flowpay",
]


@pytest.mark.parametrize("url", DATABASE_URLS)
def test_database_password_never_printed_by_status(tmp_path: Path, url: str) -> None:
    config = tmp_path / "secret.toml"
    config.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\n')
    env = {"FLOWPAY_DATABASE__URL": url, "PATH": os.environ["PATH"]}
    table = flowpay("--config", str(config), "dev", "status", env=env)
    as_json = flowpay("--config", str(config), "dev", "status", "--json", env=env)
    for done in (table, as_json):
        assert done.returncode == 0, done.stderr
        assert "SecretPw" not in done.stdout + done.stderr
    shown = json.loads(as_json.stdout)
    assert shown["endpoints"]["database_url"] == mask_conninfo(url)
    assert [c["endpoint"] for c in shown["components"] if c["name"] == "postgres"] == [
        mask_conninfo(url)
    ]


@pytest.mark.parametrize("url", DATABASE_URLS)
def test_a_database_url_is_printed_with_its_password_masked(url: str) -> None:
    masked = mask_conninfo(url)
    assert "SecretPw" not in masked
    assert conninfo_to_dict(masked) == conninfo_to_dict(url) | {"password": "***"}
    assert masked.startswith("postgres") == url.startswith("postgres")  # a URL stays a URL


@pytest.mark.parametrize(
    "url",
    [
        "host=db password=Top SecretPw",  # libpq's complaint would quote "SecretPw"
        "POSTGRESQL://flowpay:TopSecretPw@db/flowpay",  # libpq reads lower-case schemes only
    ],
)
def test_a_database_url_libpq_cannot_read_is_refused_without_echoing_it(url: str) -> None:
    env = {"FLOWPAY_DATABASE__URL": url, "PATH": os.environ["PATH"]}
    for args in (["db", "init"], ["dev", "status"]):
        done = flowpay(*args, env=env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "SecretPw" not in done.stdout + done.stderr
        assert "database.url" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
