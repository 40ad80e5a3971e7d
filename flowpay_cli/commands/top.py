"""`flowpay top`: a live dashboard of every stage, refreshed from /metrics and the database."""

from __future__ import annotations

import os
import select
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.live import Live

from flowpay_cli.context import settings
from flowpay_cli.output import console, print_json
from flowpay_cli.top.gather import Gatherer
from flowpay_cli.top.view import render

QUIT_KEYS = ("q", "Q")


def top(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Draw one frame and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one snapshot as JSON and exit.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.2, help="Seconds between refreshes.")
    ] = 1.0,
) -> None:
    """Live view: payments/s per stage, consumer lag, backlogs, dead letters (q quits)."""
    gatherer = Gatherer(settings(ctx))
    try:
        if as_json or once:
            snapshot = gatherer.gather_rates(interval)
            if as_json:
                print_json(snapshot.as_dict())
            else:
                console.print(render(snapshot, interval))
            return
        _live(gatherer, interval)
    finally:
        gatherer.close()


def _live(gatherer: Gatherer, interval: float) -> None:
    with (
        _keys() as next_key,
        Live(render(gatherer.gather(), interval), console=console, screen=True) as live,
    ):
        while next_key(interval) not in QUIT_KEYS:
            live.update(render(gatherer.gather(), interval), refresh=True)


def _no_key(timeout: float) -> None:
    time.sleep(timeout)


@contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """``next_key(timeout)``: a key pressed within ``timeout`` seconds, else None.

    On a terminal, stdin is read in cbreak mode (keys arrive unbuffered, unechoed); otherwise
    nothing is read and Ctrl-C quits.
    """
    if not sys.stdin.isatty():
        yield _no_key
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def next_key(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace") if ready else None

    try:
        yield next_key
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
