"""PostgreSQL access: connection URL, connections and pools, error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from workers.core.config import Settings
from workers.core.errors import ConstraintViolation, TransientError

# Taken by a migration run for its whole transaction, so that runs wait for each other (any
# constant unique to FlowPay); replay's swap of the ledger schema takes it too.
SCHEMA_LOCK = 0x466C6F77
# Per host of a multi-host URL: a server that accepts no connection (hung, unreachable) is
# skipped after this long.
MULTI_HOST_CONNECT_TIMEOUT_S = 5


def database_url(settings: Settings) -> str:
    """The configured database, else the dev stack's private cluster."""
    if settings.database.url is not None:
        return settings.database.url.get_secret_value()
    return local_url(settings)


def local_url(settings: Settings, user: str = "flowpay", password: str | None = None) -> str:
    """The dev stack's database as ``user``: every server of it, in one libpq URL.

    With a standby, libpq tries each host in turn and keeps the one that takes writes
    (``target_session_attrs=read-write``), so that after a failover every new connection, a
    pool's replacements included, reaches the new primary by itself. A host that does not
    answer is given up after ``connect_timeout`` seconds rather than stalling the failover.
    """
    auth = user if password is None else f"{user}:{quote(password, safe='')}"
    hosts = ",".join(f"127.0.0.1:{port}" for port in settings.dev.pg_ports)
    url = f"postgresql://{auth}@{hosts}/flowpay"
    if len(settings.dev.pg_ports) > 1:
        url += f"?target_session_attrs=read-write&connect_timeout={MULTI_HOST_CONNECT_TIMEOUT_S}"
    return url


def connect(
    settings: Settings, *, autocommit: bool = False
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(database_url(settings), autocommit=autocommit, connect_timeout=10)


def make_pool(settings: Settings, *, name: str) -> ConnectionPool:
    return ConnectionPool(
        database_url(settings),
        min_size=settings.database.pool_min_size,
        max_size=settings.database.pool_max_size,
        name=name,
        open=True,
    )


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Turn PostgreSQL errors into FlowPay's typed exceptions.

    Constraint errors keep the constraint's name, so callers decide by name what a clash means.
    A lost connection is transient: the runner retries it.
    """
    try:
        yield
    except pg_errors.IntegrityError as exc:
        name = exc.diag.constraint_name or "unknown"
        raise ConstraintViolation(name, f"constraint {name} violated") from exc
    except psycopg.OperationalError as exc:
        raise TransientError(f"database unavailable: {exc}") from exc
