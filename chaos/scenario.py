"""The whole scenario: stack, roles, receiver, merchants, load under faults, settling, checks.

Recovery after a fault is measured end to end: a probe payment (a card that works) is sent the
moment the fault is over (the process restarted, the broker or database started again, the
fault flags cleared); the recovery time is how long until the API reports it terminal, the ledger
has applied its terminal event and its webhook reached the receiver.
"""

from __future__ import annotations

import json
import random
import shutil
import statistics
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from psycopg.rows import class_row

from chaos import eventlog, secrets, settle, stack
from chaos.evidence import Evidence, JournalEntry
from chaos.faults import KILL_KAFKA_LEADER, KILL_PG_PRIMARY, KINDS, REBALANCE, Injector, schedule
from chaos.invariants import check_all
from chaos.load import Load, Merchant, Sent
from chaos.receiver import Receiver, receiving
from chaos.roles import Roles, start_roles
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.db import connect
from workers.core.sealing import keyring
from workers.core.sql import load_queries
from workers.core.topics import GROUP_API, GROUP_LEDGER, GROUP_NOTIFIER, topics
from workers.devstack.roles import flowpay_argv
from workers.notifier.endpoints import register_endpoint

ROOT = Path(__file__).resolve().parents[1]
Q = load_queries("chaos")
RECOVERY_TIMEOUT_S = 90.0
SECRETS = "7 no secret in any log or CLI output"
STAYED_UP = "8 no role exited unless killed"


@dataclass(frozen=True)
class Config:
    payments: int = 10_000
    duration_s: float = 600.0
    seed: int = 1
    scale_out: bool = False
    rounds: int | None = None  # faults of each kind; None: as many as fit in the duration
    merchants: int = 3
    window_s: float = 3.0
    gap_s: float = 1.5  # between one fault's recovery and the next fault, on average
    settle_s: float = 180.0
    keep: bool = False  # keep the stack's files (logs) even when every check passed
    brokers: int = 1  # Kafka nodes: 3 adds the kill of the busiest partition leader
    pg_standby: bool = False  # a synchronous standby; adds the kill of the primary
    only: tuple[str, ...] = ()  # these kinds of fault alone (a shorter run); () for every kind


@dataclass
class FaultRecord:
    kind: str
    at_s: float  # since the load started
    recovery_s: float | None  # None: no recovery within RECOVERY_TIMEOUT_S


@dataclass
class Outcome:
    config: Config
    sent: list[Sent] = field(default_factory=list)
    refunds: list[Sent] = field(default_factory=list)
    actions: list[Sent] = field(default_factory=list)  # captures and cancels
    payouts: list[Sent] = field(default_factory=list)  # of a part of the balance
    overdrafts: list[Sent] = field(default_factory=list)  # of more than could be there
    payout_statuses: dict[str, int] = field(default_factory=dict)
    payouts_skipped: int = 0  # planned when the balance had nothing to spare
    statuses: dict[str, int] = field(default_factory=dict)
    faults: list[FaultRecord] = field(default_factory=list)
    violations: dict[str, list[str]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    home: Path | None = None

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())


def run(config: Config) -> Outcome:
    outcome = Outcome(config)
    began = time.monotonic()
    home = ROOT / ".flowpay" / "chaos" / uuid.uuid4().hex[:8]
    partitions = 6 if config.scale_out else 3
    chaos_stack = stack.configure(
        home, partitions=partitions, brokers=config.brokers, pg_standby=config.pg_standby
    )
    outcome.home = home
    roles: Roles | None = None
    try:
        stack.start(chaos_stack)
        roles = start_roles(chaos_stack, scale_out=config.scale_out)
        outcome.seconds["start"] = time.monotonic() - began
        with receiving(stack.free_port()) as receiver:
            _run_load(config, chaos_stack, roles, receiver, outcome)
    finally:
        stopping = time.monotonic()
        if roles is not None:
            roles.stop_all()
        stack.stop(chaos_stack)
        outcome.seconds["stop"] = time.monotonic() - stopping
    outcome.seconds["total"] = time.monotonic() - began
    if outcome.ok and not config.keep:
        shutil.rmtree(home, ignore_errors=True)
        outcome.home = None
    return outcome


def _run_load(
    config: Config, st: stack.ChaosStack, roles: Roles, receiver: Receiver, outcome: Outcome
) -> None:
    merchants = _merchants(st, receiver, config.merchants)
    load = Load(
        st.api_url,
        merchants,
        payments=config.payments,
        duration_s=config.duration_s,
        seed=config.seed,
    )
    load.start()
    started = time.monotonic()
    died: list[str] = []
    try:
        injector = Injector(st, roles, receiver, config.seed, window_s=config.window_s)
        kinds = fault_kinds(config)
        gaps = random.Random(f"gaps-{config.seed}")
        for kind in schedule(kinds, config.rounds or 10_000, config.seed):
            if config.rounds is None and time.monotonic() - started > config.duration_s:
                break
            time.sleep(gaps.uniform(config.gap_s / 2, config.gap_s * 1.5))
            died.extend(roles.revive())
            at = time.monotonic() - started
            mend = injector.inject(kind)
            outcome.faults.append(FaultRecord(kind, at, _recovery(st, load, receiver)))
            mend()
        while not load.wait(1.0):
            died.extend(roles.revive())
        outcome.seconds["load"] = time.monotonic() - started
        outcome.seconds["settle"], leftovers = settle.settle(
            st, config.settle_s, lambda: died.extend(roles.revive())
        )
        checking = time.monotonic()
        outputs = _cli_outputs(st)
        evidence = _evidence(st, load, receiver, merchants, leftovers, outputs)
        outcome.violations = check_all(evidence)
        outcome.violations[SECRETS] = _leaks(st, roles, merchants, outputs)
        outcome.violations[STAYED_UP] = died
        outcome.seconds["checks"] = time.monotonic() - checking
        outcome.sent, outcome.refunds, outcome.actions = load.payments, load.refunds, load.actions
        outcome.payouts, outcome.overdrafts = load.payouts, load.overdrafts
        outcome.payouts_skipped = load.payouts_skipped
        for payment in evidence.payments:
            outcome.statuses[payment["status"]] = outcome.statuses.get(payment["status"], 0) + 1
        for payout in evidence.payouts:
            status = payout["status"]
            outcome.payout_statuses[status] = outcome.payout_statuses.get(status, 0) + 1
    finally:
        load.close()


def fault_kinds(config: Config) -> tuple[str, ...]:
    """Today's faults, and those of a scaled-out stack or a cluster where it is one."""
    kinds = (*KINDS, REBALANCE) if config.scale_out else KINDS
    if config.brokers >= 3:
        kinds = (*kinds, KILL_KAFKA_LEADER)
    if config.pg_standby:
        kinds = (*kinds, KILL_PG_PRIMARY)
    return tuple(k for k in kinds if k in config.only) if config.only else kinds


def _merchants(st: stack.ChaosStack, receiver: Receiver, count: int) -> list[Merchant]:
    made = []
    keys = keyring(st.settings)
    with connect(st.settings, "operator", autocommit=True) as conn:
        for n in range(count):
            merchant = create_merchant(conn, f"Chaos shop {n + 1}")
            url = receiver.url(merchant.id)
            endpoint = register_endpoint(conn, merchant.id, url, st.settings.notifier, keys)
            receiver.secrets[merchant.id] = endpoint.secret
            made.append(Merchant(merchant.id, merchant.api_key, endpoint.secret))
    return made


def _recovery(st: stack.ChaosStack, load: Load, receiver: Receiver) -> float | None:
    """Seconds from now until a probe payment sent now has gone all the way through."""
    began = time.monotonic()
    probe = load.call(load.probe())
    if not probe.accepted:
        return None
    payment_id = next(iter(probe.ids))
    left = RECOVERY_TIMEOUT_S - (time.monotonic() - began)
    status = load.call(load.wait_terminal(load.merchants[0], payment_id, max(left, 0.0)))
    if status is None:
        return None
    event_type = f"payment.{status}"
    while time.monotonic() - began < RECOVERY_TIMEOUT_S:
        if _ledger_saw(st, payment_id, event_type) and _delivered(receiver, payment_id, event_type):
            return time.monotonic() - began
        time.sleep(0.1)
    return None


def _delivered(receiver: Receiver, payment_id: str, event_type: str) -> bool:
    return any(
        r.answered == 200 and r.body["data"]["id"] == payment_id and r.body["type"] == event_type
        for r in receiver.receipts()
    )


def _ledger_saw(st: stack.ChaosStack, payment_id: str, event_type: str) -> bool:
    try:
        with connect(st.settings, "operator") as conn:
            row = conn.execute(
                Q["ledger_saw_terminal"], {"payment_id": payment_id, "type": event_type}
            ).fetchone()
    except Exception:  # the database coming back counts as "not yet"
        return False
    return row is not None


def _cli(st: stack.ChaosStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        flowpay_argv(*args),
        capture_output=True,
        text=True,
        env=st.env,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


# Every CLI command the checks read, run at once once the system settled (their output is also
# searched for secrets).
CLI_CALLS: tuple[tuple[str, ...], ...] = (
    ("ledger", "check", "--json"),
    ("ledger", "balances", "--json"),
    ("dev", "status", "--json"),
    ("merchants", "list"),
    ("webhooks", "endpoints"),
    ("webhooks", "list"),
    ("dlq", "list"),
)
Outputs = dict[tuple[str, ...], subprocess.CompletedProcess[str]]


def _cli_outputs(st: stack.ChaosStack) -> Outputs:
    with ThreadPoolExecutor(len(CLI_CALLS)) as pool:
        return dict(zip(CLI_CALLS, pool.map(lambda args: _cli(st, *args), CLI_CALLS), strict=True))


def _json_of(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout) if done.stdout.strip() else {}


def _evidence(
    st: stack.ChaosStack,
    load: Load,
    receiver: Receiver,
    merchants: list[Merchant],
    leftovers: list[str],
    outputs: Outputs,
) -> Evidence:
    payments = [p for m in merchants for p in _listed(st, m, "payments")]
    with connect(st.settings, "operator") as conn:
        with conn.cursor(row_factory=class_row(JournalEntry)) as cursor:
            journal = cursor.execute(Q["merchant_journal"]).fetchall()
        stuck_refunds = [f"{r[0]} of {r[1]}" for r in conn.execute(Q["stuck_refunds"])]
        failed = [" ".join(str(x) for x in r) for r in conn.execute(Q["failed_deliveries"])]
        dead = [" ".join(str(x) for x in r) for r in conn.execute(Q["ledger_dead_letters"])]
        acknowledged = {uuid.UUID(str(r[0])) for r in conn.execute(Q["acknowledged_events"])}
        sagas = [" ".join(str(x) for x in r) for r in conn.execute(Q["unfinished_sagas"])]
        recorded = {
            group: {uuid.UUID(str(r[0])) for r in conn.execute(Q[query])}
            for group, query in (
                (GROUP_API, "read_model_events"),
                (GROUP_LEDGER, "ledger_events"),
                (GROUP_NOTIFIER, "notifier_events"),
            )
        }
    return Evidence(
        payments=payments,
        sent=load.payments,
        refunds=load.refunds,
        stuck_refunds=stuck_refunds,
        leftovers=leftovers,
        charges=settle.sim_charges(st),
        log=eventlog.read_all(st.settings),
        dead_letter_topic=eventlog.read_all(st.settings, topics(st.settings).dead_letters),
        receipts=receiver.receipts(),
        failed_deliveries=failed,
        ledger_check=_json_of(outputs[CLI_CALLS[0]]),
        balances=_json_of(outputs[CLI_CALLS[1]]),
        ledger_dead_letters=dead,
        recorded=recorded,
        lag=settle.lag(st),
        merchants=[m.id for m in merchants],
        acknowledged=acknowledged,
        actions=load.actions,
        authorizations=settle.sim_authorizations(st),
        unfinished_sagas=sagas,
        payouts=[p for m in merchants for p in _listed(st, m, "payouts")],
        payout_requests=load.payouts,
        overdrafts=load.overdrafts,
        gateway_payouts=settle.sim_payouts(st),
        api_balances={
            m.id: _get_json(f"{st.api_url}/v1/balance", headers=_auth(m)) for m in merchants
        },
        journal=journal,
        authorization_ttl_s=st.settings.orchestrator.authorization_ttl_s,
        release_grace_s=RECOVERY_TIMEOUT_S,
    )


def _auth(merchant: Merchant) -> dict[str, str]:
    return {"Authorization": f"Bearer {merchant.api_key}"}


def _listed(st: stack.ChaosStack, merchant: Merchant, what: str) -> list[dict[str, Any]]:
    """Every payment (or payout) of the merchant, as the API lists them (newest first, 100 a
    page)."""
    found: list[dict[str, Any]] = []
    headers = _auth(merchant)
    params: dict[str, Any] = {"limit": 100}
    while True:
        body = _get_json(f"{st.api_url}/v1/{what}", params=params, headers=headers)
        found.extend(p | {"merchant_id": merchant.id} for p in body["data"])
        if not body["has_more"]:
            return found
        params["starting_after"] = body["data"][-1]["id"]


def _get_json(url: str, **kwargs: Any) -> Any:
    """GET as a client would: a 503 (its pooled connection died with the restarted database,
    answered with Retry-After) or a dropped connection is tried again."""
    deadline = time.monotonic() + 60
    while True:
        try:
            response = local_http.client().get(url, timeout=30, **kwargs)
            if response.status_code < 500 or time.monotonic() > deadline:
                response.raise_for_status()
                return response.json()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def _leaks(
    st: stack.ChaosStack, roles: Roles, merchants: list[Merchant], outputs: Outputs
) -> list[str]:
    """Every secret the scenario created, searched for in every role's log and CLI output."""
    wanted = dict(st.secrets)
    for m in merchants:
        wanted[f"API key of {m.id}"] = m.api_key
        wanted[f"webhook secret of {m.id}"] = m.webhook_secret
    printed = {f"flowpay {' '.join(a)}": done.stdout + done.stderr for a, done in outputs.items()}
    return secrets.leaks(wanted, printed, roles.logs())


def recovery_stats(faults: list[FaultRecord]) -> dict[str, dict[str, Any]]:
    """Per kind: how many, and recovery p50 and max (None where any did not recover)."""
    stats: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(f.kind for f in faults):
        times = [f.recovery_s for f in faults if f.kind == kind]
        measured = [t for t in times if t is not None]
        stats[kind] = {
            "count": len(times),
            "recovered": len(measured),
            "p50_s": round(statistics.median(measured), 2) if measured else None,
            "max_s": round(max(measured), 2) if measured else None,
        }
    return stats
