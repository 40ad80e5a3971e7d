"""PostgreSQL access: each role's connection URL, connections and pools, error mapping.

Every connection names the role it acts as (``DatabaseRole``): its URL is ``database.urls.<role>``,
else the one ``database.url`` (development), else the dev stack's cluster, where each role logs
in as ``flowpay_<role>`` with the password the stack generated (a libpq password file, so no URL
ever holds one).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_delay

from workers.core.config import DatabaseRole, Settings
from workers.core.errors import ConstraintViolation, TransientError
from workers.core.retry import jittered

log = logging.getLogger(__name__)

# Taken by a migration run for its whole transaction, so that runs wait for each other (any
# constant unique to FlowPay); replay's swap of the ledger schema takes it too.
SCHEMA_LOCK = 0x466C6F77
# The dev stack's cluster: its database and its superuser (the stack's own administrator).
DEV_DATABASE: Final = "flowpay"
DEV_SUPERUSER: Final = "flowpay"
ROLE_PREFIX: Final = "flowpay_"
# Per host of a multi-host URL: a server that accepts no connection (hung, unreachable) is
# skipped after this long.
MULTI_HOST_CONNECT_TIMEOUT_S: Final = 5
# How long a role's start-up waits for a database that is not up yet (restarting, failing over).
START_WAIT_S: Final = 60.0
# What a server answers that waiting will not change.
_REFUSED_FOR_GOOD: Final = (
    "authentication failed",
    "no password supplied",
    "does not exist",
    "no pg_hba.conf entry",
    "permission denied",
)


def role_name(role: DatabaseRole) -> str:
    """The PostgreSQL role that ``role``'s privileges are granted to."""
    return f"{ROLE_PREFIX}{role}"


def database_url(settings: Settings, role: DatabaseRole) -> str:
    """Where ``role`` connects, as whom."""
    database = settings.database
    chosen = database.urls.get(role) or database.url
    if chosen is not None:
        return chosen.get_secret_value()
    return dev_url(settings, role_name(role))


def admin_url(settings: Settings) -> str:
    """Who creates the roles (``flowpay db init``): a superuser or a role with CREATEROLE."""
    database = settings.database
    chosen = database.admin_url or database.url
    if chosen is not None:
        return chosen.get_secret_value()
    return dev_url(settings, DEV_SUPERUSER)


def dev_passfile(settings: Settings) -> Path:
    """The dev stack's libpq password file: every role's generated password (mode 0600)."""
    return settings.dev.credentials / "postgres.pgpass"


def dev_url(settings: Settings, user: str, dbname: str = DEV_DATABASE) -> str:
    """The dev stack's database as ``user``: every server of it, in one libpq URL.

    With a standby (``dev.pg_standby``), libpq tries each host in turn and keeps the one that
    takes writes (``target_session_attrs=read-write``), so that after a failover every new
    connection, a pool's replacements included, reaches the new primary by itself. A host that
    does not answer is given up after ``connect_timeout`` seconds rather than stalling it.
    """
    ports = settings.dev.pg_ports
    several = len(ports) > 1
    return make_conninfo(
        host=",".join("127.0.0.1" for _ in ports),
        port=",".join(str(port) for port in ports),
        user=user,
        dbname=dbname,
        passfile=str(dev_passfile(settings)),
        # None leaves a parameter out: a lone server's URL is as it always was.
        target_session_attrs="read-write" if several else None,
        connect_timeout=MULTI_HOST_CONNECT_TIMEOUT_S if several else None,
    )


def connect(
    settings: Settings, role: DatabaseRole, *, autocommit: bool = False
) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(database_url(settings, role), autocommit=autocommit, connect_timeout=10)


def connect_at_start(
    settings: Settings, role: DatabaseRole, *, within_s: float = START_WAIT_S
) -> psycopg.Connection[tuple[object, ...]]:
    """``connect`` for a role's start-up checks: a server that is starting, restarting or
    failing over is waited for (as the pools wait for it), for up to ``within_s``; refused
    credentials or a missing database fail at once."""
    for attempt in Retrying(
        retry=retry_if_exception(_unavailable),
        wait=jittered(0.2, 5.0),
        stop=stop_after_delay(within_s),
        before_sleep=functools.partial(_waiting, role),
        reraise=True,
    ):
        with attempt:
            return connect(settings, role)
    raise AssertionError("unreachable: the last attempt returned or raised")


def _waiting(role: DatabaseRole, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("%s: the database is not available yet (%s); waiting", role, error)


def _unavailable(exc: BaseException) -> bool:
    """A failed connection worth trying again: not one the server refused for good."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc)
    return not any(marker in text for marker in _REFUSED_FOR_GOOD)


def make_pool(
    settings: Settings, role: DatabaseRole, *, name: str, max_size: int | None = None
) -> ConnectionPool:
    return ConnectionPool(
        database_url(settings, role),
        min_size=settings.database.pool_min_size,
        max_size=max_size or settings.database.pool_max_size,
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
