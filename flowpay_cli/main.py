"""The `flowpay` command. Expected failures end as one line on stderr and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from flowpay_cli.commands import (
    api,
    deploy,
    dev,
    dlq,
    gateway_sim,
    health,
    infra,
    kafka,
    ledger,
    listen,
    outbox,
    pay,
    payments,
    payouts,
    processor,
    sagas,
    secret_keys,
    top,
    webhooks,
)
from flowpay_cli.context import state
from flowpay_cli.output import error_line
from workers.core.errors import FlowPayError

try:  # typer >= 0.29 carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
except ImportError:  # pragma: no cover - older typer on top of click
    from click.exceptions import ClickException, NoArgsIsHelpError  # type: ignore[assignment]

EXIT_USAGE = 2

app = typer.Typer(
    name="flowpay",
    help="FlowPay: payments as idempotent, recorded, recoverable workflows.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


@app.callback()
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


app.add_typer(dev.app, name="dev")
app.add_typer(infra.db_app, name="db")
app.add_typer(infra.topics_app, name="topics")
app.add_typer(kafka.app, name="kafka")
app.command("health")(health.health)
app.command("serve-api")(api.serve_api)
app.command("pay")(pay.pay)
app.command("listen")(listen.listen)
app.command("run-outbox")(outbox.run_outbox)
app.command("serve-gateway-sim")(gateway_sim.serve_gateway_sim)
app.command("run-processor")(processor.run_processor)
app.command("refund")(payments.refund)
app.command("capture")(payments.capture)
app.command("cancel")(payments.cancel)
app.command("payout")(payouts.payout)
app.command("balance")(payouts.balance)
app.command("run-notifier")(webhooks.run_notifier)
app.command("run-ledger")(ledger.run_ledger)
app.command("run-orchestrator")(sagas.run_orchestrator)
app.add_typer(sagas.app, name="sagas")
app.command("replay")(ledger.replay)
app.add_typer(ledger.ledger_app, name="ledger")
app.add_typer(webhooks.app, name="webhooks")
app.add_typer(dlq.app, name="dlq")
app.command("status")(payments.status)
app.command("top")(top.top)
app.add_typer(api.merchants_app, name="merchants")
app.add_typer(secret_keys.app, name="secrets")
app.add_typer(deploy.app, name="deploy")


def run() -> None:
    """Console-script entry point."""
    try:
        result = app(standalone_mode=False)
    except NoArgsIsHelpError as exc:
        sys.stdout.write(exc.ctx.get_help() + "\n" if exc.ctx is not None else "")
        sys.exit(EXIT_USAGE)
    except ClickException as exc:
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
