"""What the ledger tests share (no tests here): event scenarios, an independent oracle of the
balances they must produce, publishing, running the ledger, and snapshots of the ledger."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import psycopg

from tests.conftest import ROOT, env_for, override
from tests.helpers.db import Conn
from tests.helpers.engine import running
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.consuming import Engine
from workers.core.db import admin_url
from workers.core.events import (
    Canceled,
    CaptureRequested,
    ChargeReversed,
    Event,
    EventData,
    EventType,
    Failed,
    Initiated,
    PayoutFailed,
    PayoutPaid,
    PayoutRequested,
    Processing,
    Refunded,
    RefundFailed,
    RefundRequested,
    RequiresCapture,
    Succeeded,
    encode,
    new_event,
)
from workers.core.kafka import KafkaError, Message, make_producer
from workers.core.status import CancellationReason
from workers.core.topics import topics
from workers.ledger.applier import Applier
from workers.ledger.consumer import Ledger, subscriber
from workers.ledger.rules import STANDARD_RULES, PostingRules

Balances = dict[tuple[str, str], int]  # (account, phase) -> balance on its normal side


def quick(settings: Settings, batch_size: int = 50) -> Settings:
    return override(
        settings,
        "worker",
        batch_size=batch_size,
        poll_timeout_s=0.1,
        retry_max_backoff_s=0.2,
        max_attempts=2,
        grace_period_s=20.0,
    )


def ev(kind: EventType, payment: str, data: EventData, merchant: str = "mer_a") -> Event:
    return new_event(kind, payment_id=payment, merchant_id=merchant, data=data, source="test")


@dataclass
class Scenario:
    """Payments with known outcomes, their events, and the balances they must leave."""

    events: list[Event] = field(default_factory=list)
    expected: Balances = field(default_factory=dict)

    def add(self, account: str, phase: str, amount: int) -> None:
        self.expected[(account, phase)] = self.expected.get((account, phase), 0) + amount

    def payment(
        self,
        n: int,
        outcome: str,
        *,
        amount: int = 1000,
        refunds: tuple[int, ...] = (),
        currency: str = "USD",
        merchant: str = "mer_a",
    ) -> None:
        """One payment: ``outcome`` is succeeded, failed, reversed (failed, then a late charge
        refunded at once) or pending (never settled)."""
        pid = f"pay_{n:05d}"
        gr, rp, sus = (
            f"{c}:{currency}" for c in ("gateway_receivable", "refunds_paid", "suspense")
        )
        mp = f"merchant_payable:{merchant}:{currency}"
        add = self.events.append
        add(
            ev(
                EventType.INITIATED,
                pid,
                Initiated(amount=amount, currency=currency, payment_method="pm_card_visa"),
                merchant,
            )
        )
        add(ev(EventType.PROCESSING, pid, Processing(), merchant))
        for account in (gr, mp):
            self.add(account, "pending", 0)
        if outcome == "pending":
            self.add(gr, "pending", amount)
            self.add(mp, "pending", amount)
            return
        if outcome == "succeeded":
            add(ev(EventType.SUCCEEDED, pid, Succeeded(charge_id=f"ch_{n}"), merchant))
            self.add(gr, "posted", amount)
            self.add(mp, "posted", amount)
            total = 0
            for i, refund in enumerate(refunds):
                rid = f"re_{n}_{i}"
                total += refund
                add(
                    ev(
                        EventType.REFUND_REQUESTED,
                        pid,
                        RefundRequested(refund_id=rid, amount=refund),
                        merchant,
                    )
                )
                add(
                    ev(
                        EventType.REFUNDED,
                        pid,
                        Refunded(refund_id=rid, amount=refund, refunded_total=total),
                        merchant,
                    )
                )
                self.add(mp, "posted", -refund)
                self.add(rp, "posted", refund)
            add(
                ev(
                    EventType.REFUND_REQUESTED,
                    pid,
                    RefundRequested(refund_id=f"rx_{n}", amount=amount * 2),
                    merchant,
                )
            )
            add(
                ev(
                    EventType.REFUND_FAILED,
                    pid,
                    RefundFailed(refund_id=f"rx_{n}", reason="amount_exceeds_refundable"),
                    merchant,
                )
            )
            return
        add(ev(EventType.FAILED, pid, Failed(reason="gateway_timeout"), merchant))
        if outcome == "reversed":
            add(
                ev(
                    EventType.CHARGE_REVERSED,
                    pid,
                    ChargeReversed(charge_id=f"ch_{n}", amount=amount),
                    merchant,
                )
            )
            self.add(gr, "posted", amount)
            self.add(rp, "posted", amount)
            self.add(sus, "posted", 0)

    def manual(
        self,
        n: int,
        outcome: str,
        *,
        amount: int = 1000,
        currency: str = "USD",
        merchant: str = "mer_a",
    ) -> None:
        """One payment with manual capture: ``outcome`` is captured (three quarters of it, a
        tenth of that refunded), canceled, expired, declined or held (never decided)."""
        pid = f"pay_{n:05d}"
        gr, rp, ah = (
            f"{c}:{currency}" for c in ("gateway_receivable", "refunds_paid", "authorization_holds")
        )
        mp = f"merchant_payable:{merchant}:{currency}"
        add = self.events.append
        data = Initiated(amount=amount, currency=currency, payment_method="pm_card_visa")
        add(ev(EventType.AUTHORIZATION_REQUESTED, pid, data, merchant))
        for account in (ah, mp):
            self.add(account, "pending", 0)
        if outcome == "declined":
            add(ev(EventType.FAILED, pid, Failed(reason="card_declined"), merchant))
            return
        held = RequiresCapture(authorization_id=f"auth_{n}", amount_capturable=amount)
        add(ev(EventType.REQUIRES_CAPTURE, pid, held, merchant))
        if outcome == "held":
            self.add(ah, "pending", amount)
            self.add(mp, "pending", amount)
            return
        if outcome in ("canceled", "expired"):
            reason = CancellationReason(
                "requested_by_customer" if outcome == "canceled" else "expired"
            )
            add(ev(EventType.CANCELED, pid, Canceled(cancellation_reason=reason), merchant))
            return
        captured, refund = amount * 3 // 4, amount * 3 // 40
        asked = CaptureRequested(amount_to_capture=captured)
        add(ev(EventType.CAPTURE_REQUESTED, pid, asked, merchant))
        done = Succeeded(charge_id=f"ch_{n}", amount_captured=captured)
        add(ev(EventType.SUCCEEDED, pid, done, merchant))
        refunded = Refunded(refund_id=f"re_{n}", amount=refund, refunded_total=refund)
        add(ev(EventType.REFUNDED, pid, refunded, merchant))
        self.add(gr, "posted", captured)
        self.add(mp, "posted", captured - refund)
        self.add(rp, "posted", refund)


def mixed(payments: int, start: int = 0) -> Scenario:
    """A mix of every outcome, two currencies and two merchants; every eighth payment from the
    seventh on is captured manually (in part), every eighth from the eighth canceled."""
    scenario = Scenario()
    for n in range(start, start + payments):
        amount = 1000 + (n % 4) * 125
        currency = "EUR" if n % 7 == 3 else "USD"
        merchant = "mer_b" if n % 5 == 1 else "mer_a"
        if n % 8 in (6, 7):
            outcome = "captured" if n % 8 == 6 else ("canceled", "expired")[n // 8 % 2]
            scenario.manual(n, outcome, amount=amount, currency=currency, merchant=merchant)
            continue
        outcome = ("succeeded", "failed", "succeeded", "reversed", "pending", "succeeded")[n % 6]
        refunds = {0: (300,), 2: (), 5: (250, 750)}.get(n % 6, ())
        scenario.payment(
            n, outcome, amount=amount, refunds=refunds, currency=currency, merchant=merchant
        )
    return scenario


def payouts(count: int = 3, amount: int = 300) -> Scenario:
    """Payouts of mer_a in USD: paid, failed and still in transit, in turn."""
    scenario = Scenario()
    mp, in_transit, paid = (
        "merchant_payable:mer_a:USD",
        "payouts_in_transit:USD",
        "payouts_paid:USD",
    )
    for n in range(count):
        pid, outcome = f"po_{n:05d}", ("paid", "failed", "in_transit")[n % 3]
        requested = PayoutRequested(amount=amount, currency="USD")
        scenario.events.append(ev(EventType.PAYOUT_REQUESTED, pid, requested))
        if outcome == "paid":
            done = PayoutPaid(gateway_payout_id=f"pog_{n}", amount=amount)
            scenario.events.append(ev(EventType.PAYOUT_PAID, pid, done))
            scenario.add(mp, "posted", -amount)
            scenario.add(paid, "posted", amount)
        elif outcome == "failed":
            failed = PayoutFailed(reason="payout_refused")
            scenario.events.append(ev(EventType.PAYOUT_FAILED, pid, failed))
        else:
            scenario.add(mp, "pending", -amount)
            scenario.add(in_transit, "pending", amount)
    return scenario


def merged(*scenarios: Scenario) -> Scenario:
    total = Scenario()
    for s in scenarios:
        total.events += s.events
        for key, amount in s.expected.items():
            total.add(key[0], key[1], amount)
    return total


def publish(settings: Settings, events: list[Event], *, twice: bool = False) -> int:
    """Produce the events (each twice in a row with ``twice``); returns how many messages."""
    producer = make_producer(settings, "operator")
    errors: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            errors.append(error)

    count = 0
    for event in events:
        encoded = encode(event)
        for _ in range(2 if twice else 1):
            producer.produce(
                topics(settings).payments,
                key=encoded.key,
                value=encoded.value,
                headers=encoded.headers,
                on_delivery=delivered,
            )
            producer.poll(0)
            count += 1
    assert producer.flush(30) == 0, "Kafka did not acknowledge every event"
    assert not errors, errors
    return count


def produce_raw(settings: Settings, value: bytes, key: bytes = b"pay_raw") -> None:
    producer = make_producer(settings, "operator")
    producer.produce(topics(settings).payments, key=key, value=value)
    assert producer.flush(30) == 0


def consumed(db: Conn, schema: str = "ledger") -> int:
    """Messages the ledger has taken (applied, skipped as duplicates or dead-lettered)."""
    row = db.execute(f"SELECT coalesce(sum(next_offset), 0) FROM {schema}.cursors").fetchone()
    return int(row[0]) if row else 0


def wait_consumed(db: Conn, count: int, schema: str = "ledger", timeout_s: float = 60) -> None:
    wait_for(lambda: consumed(db, schema) >= count, timeout_s, f"{count} messages consumed")
    assert consumed(db, schema) == count


@dataclass
class RunningLedger:
    """A ledger running on the engine in a thread: its handler's applier, its positions."""

    ledger: Ledger
    engine: Engine

    @property
    def applier(self) -> Applier:
        return self.ledger.applier

    @property
    def positions(self) -> dict[tuple[str, int], int]:
        return self.engine.positions


@contextmanager
def ledger_thread(
    settings: Settings, rules: PostingRules = STANDARD_RULES
) -> Iterator[RunningLedger]:
    """A run-ledger consumer in a thread, stopped cleanly at the end of the block."""
    ledger = Ledger(settings, rules)
    try:
        with running(settings, subscriber(ledger)) as engine:
            yield RunningLedger(ledger, engine)
    finally:
        ledger.close()


def start_ledger_process(settings: Settings, **env: str) -> subprocess.Popen[bytes]:
    """``python -m workers.ledger``: the same serve() as ``flowpay run-ledger``."""
    environment = env_for(settings)
    environment.update(
        {"FLOWPAY_WORKER__POLL_TIMEOUT_S": "0.1", "FLOWPAY_WORKER__GRACE_PERIOD_S": "20"}
    )
    environment.update(env)
    # A file, not a pipe: nobody reads a pipe until the end, and a full one (64 KiB of log
    # lines) would block the ledger mid-batch.
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by stop_process
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.ledger"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    _STDERR[process.pid] = stderr
    return process


_STDERR: dict[int, IO[bytes]] = {}


def stop_process(process: subprocess.Popen[bytes]) -> str:
    """SIGTERM and wait; returns its stderr. Asserts a clean exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    with _STDERR.pop(process.pid) as stderr:
        stderr.seek(0)
        text = stderr.read().decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    return text


def kill_process(process: subprocess.Popen[bytes]) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)


def balances(db: Conn, schema: str = "ledger") -> Balances:
    """Stored balances on each account's normal side, zeros left out."""
    rows = db.execute(
        f"""SELECT b.account_id, b.phase,
                   CASE a.normal_side WHEN 'debit' THEN b.debits - b.credits
                                      ELSE b.credits - b.debits END
            FROM {schema}.balances b JOIN {schema}.accounts a ON a.id = b.account_id"""
    ).fetchall()
    return {(str(a), str(p)): int(v) for a, p, v in rows if v}


def nonzero(expected: Balances) -> Balances:
    return {key: value for key, value in expected.items() if value}


@dataclass(frozen=True)
class Snapshot:
    balances: Balances
    chain: list[tuple[Any, ...]]
    cursors: list[tuple[Any, ...]]
    events: int
    entries: int
    dead_letters: int


def snapshot(db: Conn, schema: str = "ledger") -> Snapshot:
    """What two ledgers built from the same log must agree on, exactly."""

    def count(table: str) -> int:
        row = db.execute(f"SELECT count(*) FROM {schema}.{table}").fetchone()
        return int(row[0]) if row else 0

    return Snapshot(
        balances=balances(db, schema),
        chain=db.execute(
            f"""SELECT source_topic, source_partition, seq, id, kind, source_offset, prev_hash, hash
                FROM {schema}.transactions ORDER BY 1, 2, 3"""
        ).fetchall(),
        cursors=db.execute(
            f"""SELECT source_topic, source_partition, next_offset, chain_seq, chain_hash
                FROM {schema}.cursors WHERE next_offset > 0 ORDER BY 1, 2"""
        ).fetchall(),
        events=count("events"),
        entries=count("entries"),
        dead_letters=count("dead_letters"),
    )


def connect_to(settings: Settings) -> Conn:
    return psycopg.connect(admin_url(settings), autocommit=True)
