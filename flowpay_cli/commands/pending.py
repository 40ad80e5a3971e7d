"""Commands whose service has not been built yet: each says so and exits 2."""

from __future__ import annotations

from collections.abc import Callable

import typer

from workers.core.errors import FlowPayError

PENDING: dict[str, str] = {
    "run-ledger": "Post payment events to the double-entry ledger.",
    "replay": "Rebuild the ledger by replaying the event log.",
    "ledger": "Check the ledger and show balances.",
}


class NotImplementedYet(FlowPayError):
    pass


def register(app: typer.Typer) -> None:
    for name, help_text in PENDING.items():
        app.command(
            name,
            help=help_text,
            context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        )(_pending(name))


def _pending(name: str) -> Callable[[typer.Context], None]:
    def command(ctx: typer.Context) -> None:
        raise NotImplementedYet(f"flowpay {name}: not implemented yet")

    return command
