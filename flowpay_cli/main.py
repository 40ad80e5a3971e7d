"""The `flowpay` command. Expected failures end as one line on stderr and exit code 2."""

from __future__ import annotations

import importlib
import sys
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import typer

from flowpay_cli.context import state
from flowpay_cli.output import error_line
from workers.core.errors import FlowPayError

EXIT_USAGE = 2

# Every command: its name, the module of flowpay_cli.commands that holds it, the attribute, and
# whether it is a group (a Typer of its own). Only the invoked command's module is imported: a
# role's process (`flowpay run-processor`) loads its own service, not every other one.
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "dev": ("dev", "app", True),
    "db": ("infra", "db_app", True),
    "topics": ("infra", "topics_app", True),
    "kafka": ("kafka", "app", True),
    "health": ("health", "health", False),
    "serve-api": ("api", "serve_api", False),
    "pay": ("pay", "pay", False),
    "listen": ("listen", "listen", False),
    "run-outbox": ("outbox", "run_outbox", False),
    "serve-gateway-sim": ("gateway_sim", "serve_gateway_sim", False),
    "run-processor": ("processor", "run_processor", False),
    "refund": ("payments", "refund", False),
    "capture": ("payments", "capture", False),
    "cancel": ("payments", "cancel", False),
    "payout": ("payouts", "payout", False),
    "balance": ("payouts", "balance", False),
    "run-notifier": ("webhooks", "run_notifier", False),
    "run-ledger": ("ledger", "run_ledger", False),
    "run-orchestrator": ("sagas", "run_orchestrator", False),
    "sagas": ("sagas", "app", True),
    "replay": ("ledger", "replay", False),
    "ledger": ("ledger", "ledger_app", True),
    "webhooks": ("webhooks", "app", True),
    "dlq": ("dlq", "app", True),
    "status": ("payments", "status", False),
    "top": ("top", "top", False),
    "merchants": ("api", "merchants_app", True),
    "secrets": ("secret_keys", "app", True),
    "deploy": ("deploy", "app", True),
}


def build(names: tuple[str, ...] = tuple(COMMANDS)) -> typer.Typer:
    """The `flowpay` app with the commands ``names`` (all of them by default)."""
    built = typer.Typer(
        name="flowpay",
        help="FlowPay: payments as idempotent, recorded, recoverable workflows.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        add_completion=False,
    )
    built.callback()(main)
    for name in names:
        module, attribute, group = COMMANDS[name]
        target = getattr(importlib.import_module(f"flowpay_cli.commands.{module}"), attribute)
        if group:
            built.add_typer(target, name=name)
        else:
            built.command(name)(target)
    return built


def main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="TOML configuration file (default: $FLOWPAY_CONFIG, ./flowpay.toml)."
        ),
    ] = None,
) -> None:
    state(ctx).config_file = config


def invoked(argv: list[str]) -> tuple[str, ...]:
    """The command ``argv`` names, alone; every command when it names none we know (the help,
    or an unknown name, which the whole app answers with its list)."""
    rest = iter(argv)
    for arg in rest:
        if arg == "--config":
            next(rest, None)
        elif not arg.startswith("-"):
            return (arg,) if arg in COMMANDS else tuple(COMMANDS)
    return tuple(COMMANDS)


@cache
def _whole() -> typer.Typer:
    return build()


def __getattr__(name: str) -> Any:
    """``app``: the whole app, with every command (what tests and tools walk)."""
    if name == "app":
        return _whole()
    raise AttributeError(name)


def _usage_errors() -> tuple[type[typer.TyperException], ...]:
    if hasattr(typer, "TyperException"):  # typer >= 0.29 raises its own
        return (typer.TyperException,)
    from click import ClickException  # earlier typer runs on click (the same methods)

    return (ClickException,)  # type: ignore[return-value]


def run() -> None:
    """Console-script entry point."""
    try:
        result = build(invoked(sys.argv[1:]))(standalone_mode=False)
    except _usage_errors() as exc:  # a usage error, or a group called with no command
        ctx: typer.Context | None = getattr(exc, "ctx", None)
        if ctx is not None and exc.format_message() == ctx.get_help():
            sys.stdout.write(ctx.get_help() + "\n")
        else:
            error_line(exc.format_message())
        sys.exit(EXIT_USAGE)
    except FlowPayError as exc:
        error_line(str(exc))
        sys.exit(EXIT_USAGE)
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(result if isinstance(result, int) else 0)
