from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import flowpay
from workers.core.config import load_settings
from workers.core.errors import ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

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


def test_database_password_never_printed_by_status(tmp_path: Path) -> None:
    config = tmp_path / "secret.toml"
    config.write_text(
        '[database]\nurl = "postgresql://flowpay:TopSecretPw@127.0.0.1:1/flowpay"\n'
        '[kafka]\nbootstrap_servers = "127.0.0.1:1"\n'
    )
    for args in (["dev", "status", "--json"], ["dev", "status"]):
        done = flowpay("--config", str(config), *args)
        assert done.returncode == 0, done.stderr
        assert "TopSecretPw" not in done.stdout + done.stderr
        assert "***" in done.stdout
