"""Talking to a running merchant API in tests: a merchant's view of it, and its error envelope.

Its fixtures (``server``, ``settings``, ``api``) give a module one `flowpay serve-api` on one
database; a test module imports them by name (``from tests.helpers.api import api, server,
settings``) and each test isolates itself with merchants of its own.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import env_for
from tests.helpers.servers import free_port, running, server_processes
from tests.helpers.waiting import wait_for
from workers.api.merchants import create_merchant
from workers.core import local_http
from workers.core.config import Settings

CARD = {"amount": 1999, "currency": "USD", "payment_method": "pm_card_visa"}


@contextmanager
def serving_api(settings: Settings) -> Iterator[str]:
    """A `flowpay serve-api` process on ``settings``' database and topics; yields its URL."""
    with api_server(settings) as (url, _parent):
        yield url


@contextmanager
def api_server(
    settings: Settings, *, workers: int = 1, env: dict[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`flowpay serve-api --workers N` on ``settings``' database and topics, with more
    environment (settings) if given; its URL and its process, once every server process is up."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["serve-api", "--port", str(port), "--workers", str(workers)]
    with running(args, {**env_for(settings), **(env or {})}, url + "/healthz") as parent:
        if workers > 1:
            wait_for(
                lambda: len(server_processes(parent.pid)) == workers,
                what=f"{workers} server processes",
            )
        yield url, parent


@dataclass
class Api:
    """Merchant A (``key``) of a running server, beside merchant B (``other_key``)."""

    url: str
    key: str
    merchant_id: str
    other_key: str

    def post(
        self, path: str, body: Any = None, *, key: str | None = None, **headers: str
    ) -> httpx.Response:
        sent = {"Authorization": f"Bearer {key or self.key}", **headers}
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        return local_http.client().post(self.url + path, content=body, headers=sent, timeout=30)

    def pay(self, body: Any = CARD, idem: str | None = None, **kwargs: Any) -> httpx.Response:
        return self.post(
            "/v1/payments", body, **{"Idempotency-Key": idem or str(uuid.uuid4())}, **kwargs
        )

    def get(self, path: str, *, key: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return local_http.client().get(self.url + path, headers=headers, params=params, timeout=30)


@pytest.fixture(scope="module")
def server(module_settings: Settings) -> Iterator[str]:
    """One API server for the module."""
    with serving_api(module_settings) as url:
        yield url


@pytest.fixture
def settings(module_settings: Settings) -> Settings:
    """The module's database and topics, for every fixture built on ``settings`` (``db``)."""
    return module_settings


@pytest.fixture
def api(server: str, db: psycopg.Connection[tuple[Any, ...]]) -> Api:
    """Two new merchants of the module's server: A (``key``) and B (``other_key``)."""
    merchant = create_merchant(db, "Shop A")
    other = create_merchant(db, "Shop B")
    return Api(server, merchant.api_key, merchant.id, other.api_key)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The error of a response in the one envelope (fails if the body is anything else)."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) <= {"type", "code", "param", "message"}, body
    return dict(body["error"])


def table_counts(db: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
    """Rows in every table of the database: to show a request wrote (or dropped) nothing."""
    tables = db.execute(
        "SELECT schemaname || '.' || tablename FROM pg_tables"
        " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
    ).fetchall()
    return {
        name: int(db.execute(f"SELECT count(*) FROM {name}").fetchone()[0])  # type: ignore[index]
        for (name,) in tables
    }
