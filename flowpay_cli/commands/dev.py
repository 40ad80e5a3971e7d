"""`flowpay dev`: the local stack of real PostgreSQL, real Kafka and FlowPay's roles."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from flowpay_cli.context import settings, state
from flowpay_cli.output import Json, console, error_line, print_json, print_table
from workers.core.config import Settings, load_settings
from workers.core.errors import StackError
from workers.core.lifecycle import install_stop_handlers
from workers.core.logs import setup_logging
from workers.devstack import cluster, pg_standby, roles, secure, shape, stack
from workers.devstack.demo import demo_webhook_secret
from workers.devstack.health import NotReady
from workers.devstack.sink import received
from workers.devstack.sink import serve as serve_sink

app = typer.Typer(help="Run the local stack (PostgreSQL, Kafka, every role) as plain processes.")


@app.command()
def up(
    ctx: typer.Context,
    infra_only: Annotated[
        bool, typer.Option("--infra-only", help="Only PostgreSQL and Kafka.")
    ] = False,
    secure_kafka: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="Kafka over SASL_SSL with SCRAM-SHA-512 and ACLs, each role its own principal "
            "(certificates, passwords and the roles' configuration under <dev.home>/secure/).",
        ),
    ] = False,
    wait_s: Annotated[
        float,
        typer.Option("--wait-s", min=0, help="Seconds every role gets to answer its health check."),
    ] = 60.0,
    brokers: Annotated[
        int | None,
        typer.Option(
            "--brokers",
            min=1,
            max=9,
            help="Kafka nodes, each a broker and a KRaft controller: 1, or 3 (a quorum; topics "
            "with 3 replicas, 2 in sync). Default: as the stack was last brought up.",
        ),
    ] = None,
    pg_standby: Annotated[
        bool | None,
        typer.Option(
            "--pg-standby/--no-pg-standby",
            help="A synchronous streaming standby of PostgreSQL, failed over by "
            "pg_auto_failover. Default: as the stack was last brought up.",
        ),
    ] = None,
) -> None:
    """Start whatever is not running; reuse what is. Exit 1 if a role does not come up."""
    config = shape.applied(settings(ctx), brokers=brokers, pg_standby=pg_standby)
    config_file = state(ctx).resolved_config_file
    if secure_kafka:
        config_file = secure.prepare(config, config_file)
        config = shape.applied(load_settings(config_file), brokers=brokers, pg_standby=pg_standby)
    try:
        with console.status("starting the stack") as spinner:
            stack.up(
                config,
                infra_only=infra_only,
                config_file=config_file,
                say=lambda step: spinner.update(f"starting the stack: {step}"),
                wait_s=wait_s,
            )
    except NotReady as exc:
        error_line(str(exc))
        raise typer.Exit(1) from None
    _show(config, as_json=False)
    if secure_kafka:
        console.print(
            f"Kafka is secured; give every flowpay command this stack's configuration: "
            f"--config {config_file} (or FLOWPAY_CONFIG={config_file})",
            soft_wrap=True,
        )


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop what `dev up` started, and any process of the stack a SIGKILL left running."""
    stopped = stack.down(shape.applied(settings(ctx)))
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def status(ctx: typer.Context, as_json: Json = False) -> None:
    """Each component's state (running, unhealthy, conflict, stopped), PID, endpoint and log;
    with a Kafka cluster, the quorum's leader and each payment partition's leader and ISR."""
    _show(shape.applied(settings(ctx)), as_json=as_json)


@app.command()
def failover(ctx: typer.Context, as_json: Json = False) -> None:
    """Promote the PostgreSQL standby (`dev up --pg-standby`); the old primary becomes its
    standby. Refused unless the standby is in sync."""
    config = shape.applied(settings(ctx))
    if not config.dev.pg_standby or config.database.url is not None:
        raise StackError("no local PostgreSQL standby: start one with flowpay dev up --pg-standby")
    began = time.monotonic()
    with console.status("failing over") as spinner:
        new = pg_standby.failover(config, lambda step: spinner.update(f"failing over: {step}"))
    took = round(time.monotonic() - began, 1)
    if as_json:
        print_json({"primary": new, "seconds": took})
    else:
        console.print(f"{new} is the primary ({took} s)")


@app.command(hidden=True)
def supervise(ctx: typer.Context) -> None:
    """Keep every role running (started by `dev up`)."""
    config = settings(ctx)
    setup_logging(config.log_level, "supervisor", config.log_format)
    roles.supervise(config, install_stop_handlers(roles.supervisor_grace_s(config)))


@app.command(hidden=True)
def sink(ctx: typer.Context) -> None:
    """Receive the demo merchant's webhooks (started by `dev up`)."""
    config = settings(ctx)
    setup_logging(config.log_level, "webhook-sink", config.log_format)
    stop = install_stop_handlers(config.worker.grace_period_s)
    serve_sink(config, lambda: demo_webhook_secret(config), stop)


@app.command()
def webhooks(
    ctx: typer.Context,
    payment: Annotated[str | None, typer.Option("--payment", help="Only this payment's.")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for at least one.")] = 0.0,
    as_json: Json = False,
) -> None:
    """What the local webhook receiver got (the demo merchant's webhooks)."""
    config = settings(ctx)
    deadline = time.monotonic() + wait
    while True:
        got = [w for w in received(config) if payment is None or _payment_of(w) == payment]
        if got or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if as_json:
        print_json(got)
        return
    print_table(
        "webhooks received by the local receiver",
        ["webhook-id", "signature", "type", "payment", "status"],
        [
            (
                w["webhook_id"],
                "valid" if w["verified"] else "INVALID",
                _field(w, "type"),
                _payment_of(w),
                _field(w, "status"),
            )
            for w in got
        ],
    )


def _field(webhook: dict[str, Any], name: str) -> str:
    body = webhook["body"]
    if not isinstance(body, dict):
        return ""
    return str(body.get(name) or body.get("data", {}).get(name) or "")


def _payment_of(webhook: dict[str, Any]) -> str:
    body = webhook["body"]
    return str(body.get("data", {}).get("id", "")) if isinstance(body, dict) else ""


def _show(config: Settings, *, as_json: bool) -> None:
    if as_json:
        print_json(stack.as_json(config))
        return
    print_table(
        "FlowPay local stack",
        ["component", "state", "pid", "endpoint", "log", "detail"],
        [(c.name, c.state, c.pid, c.endpoint, c.log, c.detail) for c in stack.status(config)],
    )
    print_table("endpoints", ["name", "value"], stack.endpoints(config).items())
    view = stack.kafka_cluster(config)
    if view is not None:
        _show_cluster(view)


def _show_cluster(view: cluster.ClusterView) -> None:
    leader = (
        "none (an election, or no node runs)" if view.quorum.leader is None else view.quorum.leader
    )
    voters = ", ".join(str(v) for v in view.quorum.voters)
    print_table(
        "Kafka quorum",
        ["leader", "epoch", "voters"],
        [(leader, str(view.quorum.epoch), voters)],
    )
    print_table(
        f"partitions of {view.topic}" + (f": {view.error}" if view.error else ""),
        ["partition", "leader", "replicas", "in sync"],
        [
            (
                str(p.partition),
                str(p.leader) if p.leader >= 0 else "none",
                ", ".join(str(r) for r in p.replicas),
                ", ".join(str(r) for r in p.in_sync),
            )
            for p in view.partitions
        ],
    )
