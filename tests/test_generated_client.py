"""A client generated from /openapi.json works unchanged: what a merchant does with the document.

openapi-python-client (in an environment of its own, .venv/codegen: pyproject.toml says why)
generates a client from a real `flowpay serve-api`'s document into a temporary directory; the
generated code and a merchant's program using it type-check under mypy --strict, and the
program creates a payment, reads it, lists payments and reads an error against the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tests.helpers import api as api_fixtures
from tests.helpers.api import Api
from tests.helpers.db import Conn
from workers.core import local_http

server, settings, api = api_fixtures.server, api_fixtures.settings, api_fixtures.api

CODEGEN = Path(sys.prefix) / "codegen" / "bin"
PACKAGE = "flowpay_client"
# Names only: everything else is the generator's defaults, as a merchant would run it.
CONFIG = f"project_name_override: flowpay-client\npackage_name_override: {PACKAGE}\n"

MERCHANT = '''\
"""A merchant's program on the generated client: create, read, list, and an error."""

import json
import sys
import uuid

from flowpay_client import AuthenticatedClient
from flowpay_client.api.payments import create_payment, get_payment, list_payments
from flowpay_client.models import (
    ErrorResponse, Payment, PaymentCreate, PaymentCreateCurrency, PaymentCreateMetadata,
    PaymentList,
)

url, key = sys.argv[1:]
metadata = PaymentCreateMetadata.from_dict({"order_id": "1042"})
order = PaymentCreate(
    amount=1999, currency=PaymentCreateCurrency.USD, payment_method="pm_card_visa",
    description="Order 1042", metadata=metadata,
)
with AuthenticatedClient(base_url=url, token=key, raise_on_unexpected_status=True) as client:
    created = create_payment.sync(client=client, body=order, idempotency_key=str(uuid.uuid4()))
    assert isinstance(created, Payment), created
    read = get_payment.sync(created.id, client=client)
    assert isinstance(read, Payment), read
    page = list_payments.sync(client=client, limit=10)
    assert isinstance(page, PaymentList), page
    missing = get_payment.sync("pay_00000000000000000000000000", client=client)
    assert isinstance(missing, ErrorResponse), missing
print(json.dumps({
    "created": created.to_dict(),
    "read": read.to_dict(),
    "created_at": created.created_at.isoformat(),
    "listed": [payment.id for payment in page.data],
    "missing": missing.error.code,
}))
'''


def _run(command: list[str], cwd: Path, **env: str) -> str:
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def generate(url: str, into: Path) -> None:
    """The client openapi-python-client makes of the server's document, in ``into``."""
    if not (CODEGEN / "openapi-python-client").exists():
        pytest.fail(f"{CODEGEN} has no openapi-python-client: run `make install`")
    document, config = into / "openapi.json", into / "codegen.yaml"
    document.write_text(local_http.client().get(url + "/openapi.json").text)
    config.write_text(CONFIG)
    _run(
        [str(CODEGEN / "openapi-python-client"), "generate", "--path", str(document),
         "--config", str(config), "--meta", "none", "--output-path", str(into / PACKAGE)],
        into,
        PATH=f"{CODEGEN}{os.pathsep}{os.environ['PATH']}",  # its post-hooks run its own ruff
    )  # fmt: skip


def test_a_generated_client_type_checks_and_works_unchanged(
    api: Api, db: Conn, tmp_path: Path
) -> None:
    generate(api.url, tmp_path)
    (tmp_path / "merchant.py").write_text(MERCHANT)
    mypy = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", PACKAGE, "merchant.py"]
    _run(mypy, tmp_path)

    out = _run([sys.executable, "merchant.py", api.url, api.key], tmp_path, PYTHONPATH="")
    result = json.loads(out)
    created = result["created"]
    assert created == result["read"]
    assert (created["amount"], created["currency"], created["status"]) == (1999, "USD", "initiated")
    assert created["metadata"] == {"order_id": "1042"}
    assert result["listed"][0] == created["id"]
    assert result["missing"] == "resource_missing"
    stored = db.execute(
        "SELECT amount, created_at FROM api.payments WHERE id = %s AND merchant_id = %s",
        (created["id"], api.merchant_id),
    ).fetchone()
    assert stored is not None
    assert (stored[0], stored[1]) == (1999, datetime.fromisoformat(result["created_at"]))
