"""One benchmark's own FlowPay on the shared local stack: a fresh database, fresh topics, roles.

Like the test suite (``tests/conftest.py``), a run never touches another's data: its database
and its topic prefix are its own, and both are dropped when it ends.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import LOCAL_RECEIVERS, env_for, isolated_database, override
from tests.helpers.servers import running
from workers.core.config import Settings, load_settings
from workers.core.db import admin_url, database_url
from workers.core.db_roles import database_access, public_schema_access
from workers.core.kafka import create_topics, delete_topics
from workers.devstack import shape, stack
from workers.migrations.runner import migrate


@dataclass
class Bench:
    settings: Settings
    env: dict[str, str]
    tmp: Path
    roles: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    stack: ExitStack = field(default_factory=ExitStack)

    def start(
        self,
        name: str,
        args: list[str],
        *,
        health_url: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        """Run ``flowpay <args>`` until the benchmark ends."""
        process = self.stack.enter_context(
            running(args, {**self.env, **(env or {})}, health_url=health_url)
        )
        self.roles[name] = process
        return process

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The benchmark's database, as its administrator (what it reads spans every schema)."""
        return psycopg.connect(admin_url(self.settings), autocommit=True)

    def scalar(self, query: str | sql.SQL, params: Any = None) -> Any:
        with self.connect() as conn:
            row = conn.execute(query, params).fetchone()
        return None if row is None else row[0]


def base_settings(config: Path | None = None) -> Settings:
    """The local stack's settings (``config``'s, in the shape `dev up` made it), with the
    stack's PostgreSQL and Kafka started if they are not."""
    settings = override(shape.applied(load_settings(config)), "kafka", session_timeout_ms=6000)
    settings = override(settings, "notifier", **LOCAL_RECEIVERS)  # the bench's own receivers
    stack.up(settings, infra_only=True, config_file=None, say=lambda _step: None)
    return settings


@contextmanager
def isolated(base: Settings, name: str) -> Iterator[Bench]:
    """A fresh database (schema applied) and fresh topics, dropped afterwards."""
    tag = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    server = make_conninfo(admin_url(base), dbname="postgres")
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {tag}")
        for statement in database_access(tag):
            conn.execute(statement)
    settings = override(isolated_database(base, tag), "kafka", topic_prefix=tag.replace("_", "-"))
    env = {**env_for(settings), **_no_metrics_ports(), **UNLIMITED}
    bench = Bench(settings, env, Path(tempfile.mkdtemp(prefix=f"{tag}-")))
    try:
        with psycopg.connect(admin_url(settings), autocommit=True) as conn:
            conn.execute(public_schema_access())
        migrate(database_url(settings, "owner"))
        create_topics(settings)
        with bench.stack:
            yield bench
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {tag} WITH (FORCE)")
        delete_topics(settings)  # the payments topic keeps everything
        shutil.rmtree(bench.tmp, ignore_errors=True)


# The bench drives one merchant key far beyond the API's per-key rate limit, to measure what
# the intake can take: a bucket that never runs dry, checked on every request all the same.
UNLIMITED = {"FLOWPAY_API__RATE_LIMIT_PER_S": "1e9", "FLOWPAY_API__RATE_LIMIT_BURST": "1000000000"}


def _no_metrics_ports() -> dict[str, str]:
    # The shared stack's roles hold the default metrics ports; port 0 turns a role's off.
    metrics = Settings.model_fields.get("metrics")
    fields = getattr(metrics.annotation, "model_fields", {}) if metrics is not None else {}
    return {f"FLOWPAY_METRICS__{name.upper()}": "0" for name in fields if name.endswith("_port")}


def poll(check: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> bool:
    """True once ``check()`` holds, False when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(every_s)
    return check()
