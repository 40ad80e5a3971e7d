"""Bad arguments and bad configuration: one line on stderr, exit code 2, never a traceback.

Every command of the `flowpay` app is swept (walked from the typer app, so a new command is
covered by itself): values its options cannot parse, an unknown option, missing arguments. Values
that parse but make no sense, and broken configuration, go through a real `flowpay` process.
"""

from __future__ import annotations

import datetime
import os
import sys
import typing
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import typer

from flowpay_cli.main import app, run
from tests.conftest import env_for, flowpay
from workers.core.config import Settings

PARSED_TYPES = (int, float, datetime.datetime, Enum)


def _leaves(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    if hasattr(command, "commands"):
        for name, sub in sorted(command.commands.items()):
            yield from _leaves(sub, [*path, name])
    else:
        yield path, command


def _parsed_type(annotation: Any) -> bool:
    """The option's value is parsed by click (so a bad one fails before the command runs)."""
    for arg in typing.get_args(annotation) or (annotation,):
        if isinstance(arg, type) and arg is not bool and issubclass(arg, PARSED_TYPES):
            return True
    return False


def _cases() -> Iterator[Any]:
    for path, command in _leaves(typer.main.get_command(app), []):
        name = " ".join(path)
        hints = typing.get_type_hints(command.callback)
        yield pytest.param([*path, "--no-such-option"], id=f"{name} unknown-option")
        for param in command.params:
            option = param.opts[0]
            if option.startswith("--") and _parsed_type(hints.get(param.name)):
                yield pytest.param([*path, option, "not-a-value"], id=f"{name} {option}")
        if any(p.required for p in command.params):
            yield pytest.param(path, id=f"{name} missing")


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error:"), stderr
    return lines[0]


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `flowpay ARGS` in this process (a new interpreter per case would cost seconds);
    expect exit code 2 and return its one error line."""

    def invoke(*args: str) -> str:
        monkeypatch.setattr(sys, "argv", ["flowpay", *args])
        with pytest.raises(SystemExit) as exited:
            run()
        captured = capsys.readouterr()
        assert exited.value.code == 2, captured.out + captured.err
        assert captured.out == ""
        return _one_error_line(captured.err)

    return invoke


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No FLOWPAY_* from the outside and no ./flowpay.toml."""
    for key in list(os.environ):
        if key.startswith("FLOWPAY_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("args", list(_cases()))
def test_every_command_refuses_bad_arguments_in_one_line_with_exit_2(
    cli: Any, args: list[str]
) -> None:
    # click refuses these while parsing, before any command runs.
    cli(*args)


SENSELESS = [
    ["serve-api", "--port", "70000"],
    ["serve-api", "--port", "-1"],
    ["serve-api", "--workers", "0"],
    ["serve-gateway-sim", "--port", "70000"],
    ["serve-gateway-sim", "--timeout-rate", "1.5"],
    ["serve-gateway-sim", "--error-rate", "-0.1"],
    ["serve-gateway-sim", "--latency-ms", "-5"],
    ["pay", "--amount", "0"],
    ["pay", "--amount", "-5"],
    ["pay", "--amount", "1", "--count", "0"],
    ["pay", "--amount", "1", "--concurrency", "0"],
    ["pay", "--amount", "1", "--currency", "XYZ"],
    ["pay", "--amount", "1", "--idempotency-key", "has space"],
    ["refund", "pay_00000000000000000000000000", "--amount", "0"],
    ["replay", "--from-offset", "-1"],
    ["replay", "--from-offset", "0", "--partition", "-1"],
    ["webhooks", "list", "--limit", "0"],
    ["webhooks", "list", "--status", "bogus"],
    ["webhooks", "add-endpoint", "--merchant", "mer_x", "--url", "ftp://example.com"],
    ["health", "api", "--max-age", "-1"],
    ["top", "--once", "--interval", "0"],
    ["ledger", "balances", "--currency", "XYZ"],
    ["refund", "pay_00000000000000000000000000", "--idempotency-key", "has space"],
    ["dlq", "show", "not-an-id"],
    ["merchants", "create", "--name", ""],
    ["merchants", "create", "--name", "Shop", "--webhook-url", "not a url"],
]


@pytest.mark.parametrize("args", SENSELESS, ids=" ".join)
def test_values_that_parse_but_make_no_sense_are_one_line_exit_2(
    module_settings: Settings, cli: Any, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    # On a database of their own, should a check be missing and the command go ahead.
    for key, value in env_for(module_settings).items():
        monkeypatch.setenv(key, value)
    cli(*args)


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "flowpay.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize(
    ("toml", "names"),
    [
        ("[kafka\n", "flowpay.toml"),
        ("[kafka]\npartitions = \n", "flowpay.toml"),
        (b'[api]\nhost = "\xff\xfe"\n', "flowpay.toml"),
        ("[no_such_section]\nx = 1\n", "no_such_section"),
        ("[kafka]\nno_such_key = 1\n", "kafka.no_such_key"),
        ("kafka = 5\n", "kafka"),
        ('[notifier]\nschedule_s = ["soon"]\n', "notifier.schedule_s"),
        ("[api]\nport = 1.5\n", "api.port"),
        ("[database]\nurl = 5\n", "database.url"),
    ],
)
@pytest.mark.usefixtures("isolated_env")
def test_bad_configuration_files_are_one_line_naming_the_problem(
    cli: Any, tmp_path: Path, toml: str | bytes, names: str
) -> None:
    config = _write(tmp_path, toml)
    assert names in cli("--config", str(config), "merchants", "list")


@pytest.mark.parametrize(
    ("variable", "value", "names"),
    [
        ("FLOWPAY_API__PORT", "eighty", "api.port"),
        ("FLOWPAY_KAFKA__PARTITIONS", "-3", "kafka.partitions"),
        ("FLOWPAY_LOG_LEVEL", "LOUD", "log_level"),
        ("FLOWPAY_NOTIFIER__SCHEDULE_S", "[1, ", "notifier"),
        ("FLOWPAY_KAFKA", "not a table", "kafka"),
        ("FLOWPAY_KAFKA__NO_SUCH_KEY", "1", "kafka.no_such_key"),
    ],
)
@pytest.mark.usefixtures("isolated_env")
def test_bad_environment_variables_are_one_line_naming_the_key(
    cli: Any, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, names: str
) -> None:
    monkeypatch.setenv(variable, value)
    assert names in cli("merchants", "list")


@pytest.mark.usefixtures("isolated_env")
def test_a_config_path_that_is_a_directory_or_missing_is_one_line(
    cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for path in (tmp_path, tmp_path / "absent.toml"):
        assert str(path) in cli("--config", str(path), "merchants", "list")
    monkeypatch.setenv("FLOWPAY_CONFIG", str(tmp_path))
    cli("merchants", "list")


@pytest.mark.parametrize(
    "args",
    [
        ["serve-api", "--port", "70000"],
        ["--config", "/nonexistent/flowpay.toml", "run-ledger"],
        ["pay", "--amount", "1", "--currency", "XYZ"],
    ],
    ids=" ".join,
)
def test_a_real_process_prints_one_line_and_exits_2(tmp_path: Path, args: list[str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPAY_")}
    env["FLOWPAY_API__PORT"] = "not-a-port"  # also broken, but the arguments fail first
    done = flowpay(*args, env=env, timeout=60)
    assert done.returncode == 2
    _one_error_line(done.stderr)
