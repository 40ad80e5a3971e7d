"""`flowpay db init`: set a database up for FlowPay's roles, then migrate it.

As the administrator (``database.admin_url``): the roles (``workers.core.db_roles``), the
passwords the role URLs carry, who may connect, and the owner's takeover of what another user
made; then, as the owner, every pending migration and the roles' privileges. Safe to run again.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from workers.core.config import Settings
from workers.core.db import admin_url, database_url
from workers.core.db_roles import apply_roles, database_name, init_statements, url_passwords
from workers.core.errors import DatabaseError
from workers.migrations.runner import Migration, migrate


def init_database(settings: Settings) -> list[Migration]:
    """Roles, access and ownership as the administrator, then the migrations as the owner."""
    run_as_admin(settings, init_statements(settings), url_passwords(settings))
    return migrate(database_url(settings, "owner"))


def run_as_admin(
    settings: Settings, statements: Sequence[sql.Composed], passwords: dict[str, str]
) -> None:
    """``statements``, then ``passwords``, in one transaction on FlowPay's database."""
    url = make_conninfo(admin_url(settings), dbname=database_name(settings))
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
            apply_roles(conn, statements, passwords)
    except psycopg.Error as exc:
        # The server's words name roles and objects, never a password (they are sent hashed).
        raise DatabaseError(f"db init failed, nothing was changed: {exc}".strip()) from None
