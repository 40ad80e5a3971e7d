"""The roles of one test's own FlowPay (API, relay, processor, gateway simulator), as real processes."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import env_for
from tests.helpers.servers import free_port, running
from workers.api.client import RATE_LIMITED_TRIES, retry_after
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.core.sealing import keyring
from workers.notifier.endpoints import register_endpoint

# A processor tuned for tests: short timeouts, a fast reconciler, a short unknown-outcome deadline.
FAST_PROCESSOR = {
    "FLOWPAY_GATEWAY__TIMEOUT_S": "0.5",
    "FLOWPAY_GATEWAY__MAX_RETRIES": "1",
    "FLOWPAY_GATEWAY__BACKOFF_BASE_S": "0.05",
    "FLOWPAY_PROCESSOR__RECONCILE_INTERVAL_S": "0.3",
    "FLOWPAY_PROCESSOR__RECHECK_FIRST_S": "0.3",
    "FLOWPAY_PROCESSOR__RECHECK_MAX_S": "1",
    "FLOWPAY_PROCESSOR__UNKNOWN_DEADLINE_S": "60",
    "FLOWPAY_WORKER__POLL_TIMEOUT_S": "0.1",
}


@dataclass
class Flow:
    settings: Settings
    env: dict[str, str]
    api_url: str
    sim_url: str
    sim_db: Path
    api_key: str
    merchant_id: str
    log_dir: Path | None = None  # where each role's output goes, as <name>.log
    stack: ExitStack = field(default_factory=ExitStack)
    sim: ExitStack = field(default_factory=ExitStack)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def pay(self, method: str = "pm_card_visa", amount: int = 1999) -> dict[str, Any]:
        response = _paced(lambda: self.create_payment(method, amount))
        assert response.status_code == 202, response.text
        return dict(response.json())

    def create_payment(
        self,
        method: str = "pm_card_visa",
        amount: int = 1999,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        return local_http.client().post(
            self.api_url + "/v1/payments",
            json={"amount": amount, "currency": "USD", "payment_method": method},
            headers={
                "Authorization": f"Bearer {self.api_key}",
                "Idempotency-Key": f"k-{time.monotonic_ns()}",
                **(headers or {}),
            },
            timeout=30,
        )

    def start_downstream(self, webhook_url: str) -> str:
        """Start the ledger and the notifier, sending to ``webhook_url``; returns its secret."""
        with psycopg.connect(admin_url(self.settings), autocommit=True) as conn:
            endpoint = register_endpoint(
                conn, self.merchant_id, webhook_url, self.settings.notifier, keyring(self.settings)
            )
        self.start("ledger", ["run-ledger"])
        self.start("notifier", ["run-notifier"])
        return endpoint.secret

    def refund(self, payment_id: str, amount: int | None = None) -> httpx.Response:
        body = {} if amount is None else {"amount": amount}
        return local_http.client().post(
            f"{self.api_url}/v1/payments/{payment_id}/refunds",
            json=body,
            headers={
                "Authorization": f"Bearer {self.api_key}",
                "Idempotency-Key": f"r-{time.monotonic_ns()}",
            },
            timeout=30,
        )

    def payment(self, payment_id: str) -> dict[str, Any]:
        response = _paced(
            lambda: local_http.client().get(
                f"{self.api_url}/v1/payments/{payment_id}",
                headers={"Authorization": f"Bearer {self.api_key}"},
            )
        )
        return dict(response.json())

    def wait_for(
        self, payment_id: str, check: Callable[[dict[str, Any]], bool], timeout_s: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            payment = self.payment(payment_id)
            if check(payment):
                return payment
            assert time.monotonic() < deadline, f"payment never got there: {payment}"
            time.sleep(0.1)

    def faults(self, **faults: float) -> None:
        assert (
            local_http.client().post(self.sim_url + "/_sim/faults", json=faults).status_code == 200
        )

    def sim_charges(self, reference: str | None = None) -> list[dict[str, Any]]:
        data = local_http.client().get(self.sim_url + "/_sim/charges").json()["data"]
        return [c for c in data if reference is None or c["reference"] == reference]

    def start_sim(self, *flags: str) -> None:
        port = self.sim_url.rsplit(":", 1)[1]
        args = ["serve-gateway-sim", "--port", port, "--db", str(self.sim_db), *flags]
        self.sim.enter_context(
            running(args, self.env, self.sim_url + "/healthz", self.log_path("gateway-sim"))
        )

    def stop_sim(self) -> None:
        self.sim.close()

    def start(self, name: str, args: list[str], health_url: str | None = None) -> None:
        self.processes[name] = self.stack.enter_context(
            running(args, self.env, health_url, self.log_path(name))
        )

    def log_path(self, name: str) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"{name}.log"

    def processor_state(self, payment_id: str) -> dict[str, Any] | None:
        with psycopg.connect(admin_url(self.settings)) as conn:
            row = conn.execute(
                "SELECT state, charge_id, failure_reason, next_check_at, reversed_charge_id,"
                " refunded_amount, settled_at FROM processor.payments WHERE payment_id = %s",
                (payment_id,),
            ).fetchone()
        if row is None:
            return None
        keys = (
            "state",
            "charge_id",
            "failure_reason",
            "next_check_at",
            "reversed_charge_id",
            "refunded_amount",
            "settled_at",
        )
        return dict(zip(keys, row, strict=True))

    def emitted(self, payment_id: str) -> list[dict[str, Any]]:
        import json

        with psycopg.connect(admin_url(self.settings)) as conn:
            rows = conn.execute(
                "SELECT value FROM processor.outbox WHERE message_key = %s ORDER BY id",
                (payment_id.encode(),),
            ).fetchall()
        return [json.loads(bytes(r[0])) for r in rows]


def _paced(send: Callable[[], httpx.Response]) -> httpx.Response:
    """``send()``, again after the wait its answer asks for while the key's rate limit refuses
    it (429), as a merchant's client does (up to as many times): a test may ask faster than
    the limit allows."""
    for _ in range(RATE_LIMITED_TRIES - 1):
        wait = retry_after(response := send())
        if wait is None:
            return response
        time.sleep(wait)
    return send()


@contextmanager
def paused(process: subprocess.Popen[bytes]) -> Iterator[None]:
    """A role stopped (SIGSTOP) for the block: its work waits for it, nothing is lost."""
    process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        process.send_signal(signal.SIGCONT)


@contextmanager
def flow(
    settings: Settings,
    tmp_path: Path,
    *,
    sim_flags: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Flow]:
    """API, relay, processor, orchestrator and simulator on one test's database and topics."""
    with psycopg.connect(admin_url(settings), autocommit=True) as conn:
        merchant = create_merchant(conn, "Flow merchant")
    api_port, sim_port = free_port(), free_port()
    env = {**env_for(settings), **FAST_PROCESSOR, **(extra_env or {})}
    env["FLOWPAY_GATEWAY__URL"] = f"http://127.0.0.1:{sim_port}"
    env["FLOWPAY_GATEWAY_SIM__TIMEOUT_HOLD_S"] = env.get(
        "FLOWPAY_GATEWAY_SIM__TIMEOUT_HOLD_S", "1.5"
    )
    result = Flow(
        settings,
        env,
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{sim_port}",
        tmp_path / "sim.sqlite3",
        merchant.api_key,
        merchant.id,
        log_dir=tmp_path,
    )
    with result.stack, result.sim:
        result.start_sim(*sim_flags)
        result.start("api", ["serve-api", "--port", str(api_port)], result.api_url + "/healthz")
        result.start("outbox", ["run-outbox"])
        result.start("processor", ["run-processor"])
        result.start("orchestrator", ["run-orchestrator"])
        yield result
