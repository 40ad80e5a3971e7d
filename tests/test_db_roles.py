"""One PostgreSQL role per service: each may do its work and nothing else (issue 17, section 2).

Every test's database is set up as `flowpay db init` and `flowpay db migrate` set one up, and
each role logs in as itself (``tests/conftest.py``), so these are the privileges a deployment has.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from tests.conftest import env_for, flowpay
from tests.helpers.db import Conn
from workers.api.merchants import create_merchant
from workers.core.config import DATABASE_ROLES, DatabaseRole, Settings
from workers.core.db import admin_url, connect, database_url, role_name
from workers.core.db_roles import ACCESS, UNSAFE_ATTRIBUTES, apply_grants, apply_roles
from workers.core.sealing import keyring
from workers.migrations.runner import migrate
from workers.notifier.endpoints import NewEndpoint, register_endpoint


@pytest.fixture
def as_role(settings: Settings) -> Iterator[Any]:
    """Opens connections as a role (closed after the test)."""
    opened: list[Conn] = []

    def open_as(role: DatabaseRole) -> Conn:
        conn = connect(settings, role, autocommit=True)
        opened.append(conn)
        return conn

    yield open_as
    for conn in opened:
        conn.close()


@pytest.fixture
def endpoint(settings: Settings, db: Conn) -> NewEndpoint:
    """A merchant's webhook endpoint, with its secret stored."""
    merchant = create_merchant(db, "Roles shop")
    url = "http://127.0.0.1:9/hooks"
    return register_endpoint(db, merchant.id, url, settings.notifier, keyring(settings))


def refused(conn: Conn, statement: str) -> bool:
    """True when PostgreSQL refuses ``statement`` for want of privilege (or ownership)."""
    try:
        conn.execute(statement)
    except errors.InsufficientPrivilege:
        return True
    return False


def test_the_api_cannot_read_the_notifiers_secrets(as_role: Any, endpoint: NewEndpoint) -> None:
    api = as_role("api")
    for column in ("secret_sealed", "secret_key_id", "secret_plain", "*"):
        assert refused(api, f"SELECT {column} FROM notifier.endpoint_secrets")
    assert refused(api, "SELECT * FROM notifier.endpoints")
    assert refused(api, "SELECT * FROM notifier.deliveries")


def test_the_operator_reads_endpoints_but_not_their_secrets(
    as_role: Any, endpoint: NewEndpoint
) -> None:
    operator = as_role("operator")
    row = operator.execute("SELECT id, url, status FROM notifier.endpoints").fetchone()
    assert row is not None
    assert row[0] == endpoint.id
    for column in ("secret_sealed", "secret_plain", "endpoint_id", "*"):
        assert refused(operator, f"SELECT {column} FROM notifier.endpoint_secrets")


# What may change the ledger's rules: nobody but the owner, not even the ledger's own role.
LEDGER_TAMPERING = (
    "ALTER TABLE ledger.entries DISABLE TRIGGER ALL",
    "ALTER TABLE ledger.entries DISABLE TRIGGER entries_append_only",
    "ALTER TABLE ledger.balances ADD COLUMN x int",
    "DROP TRIGGER entries_append_only ON ledger.entries",
    "SET session_replication_role = replica",
    "TRUNCATE ledger.entries",
    "DELETE FROM ledger.entries",
)


@pytest.mark.parametrize("role", ["api", "ledger", "notifier", "operator", "outbox"])
def test_no_service_may_alter_the_ledger_nor_disable_its_triggers(
    as_role: Any, role: DatabaseRole
) -> None:
    conn = as_role(role)
    for statement in LEDGER_TAMPERING:
        assert refused(conn, statement), statement


def test_the_api_cannot_read_the_ledger_but_the_ledger_can(as_role: Any) -> None:
    assert refused(as_role("api"), "SELECT * FROM ledger.entries")
    assert refused(as_role("api"), "INSERT INTO ledger.accounts DEFAULT VALUES")
    as_role("ledger").execute("SELECT count(*) FROM ledger.entries")


def test_the_notifier_cannot_write_the_apis_payments(as_role: Any) -> None:
    notifier = as_role("notifier")
    assert refused(notifier, "UPDATE api.payments SET status = 'succeeded'")
    assert refused(
        notifier,
        "INSERT INTO api.payments (id, merchant_id, amount, currency, status)"
        " VALUES ('pay_x', 'mer_x', 1, 'EUR', 'succeeded')",
    )
    assert refused(notifier, "DELETE FROM api.payments")
    assert refused(notifier, "SELECT * FROM api.api_keys")


def test_the_relay_only_reads_and_marks_the_outboxes(as_role: Any) -> None:
    relay = as_role("outbox")
    relay.execute("SELECT count(*) FROM api.outbox")
    relay.execute("SELECT count(*) FROM processor.outbox")
    relay.execute("UPDATE api.outbox SET published_at = now() WHERE false")
    assert refused(relay, "UPDATE api.outbox SET value = '' WHERE false")
    assert refused(
        relay,
        "INSERT INTO processor.outbox (event_id, message_key, value, headers)"
        " VALUES (gen_random_uuid(), '', '', '{}')",
    )
    assert refused(relay, "SELECT * FROM api.payments")


def test_no_role_is_a_superuser_nor_can_step_outside_its_grants(db: Conn) -> None:
    names = [role_name(r) for r in DATABASE_ROLES]
    attributes = ", ".join(UNSAFE_ATTRIBUTES)
    rows = db.execute(
        f"SELECT rolname, {attributes} FROM pg_roles WHERE rolname = ANY(%s)", (names,)
    ).fetchall()
    assert sorted(r[0] for r in rows) == sorted(names)
    assert all(not any(r[1:]) for r in rows), rows
    # The owner alone owns FlowPay's schemas.
    owners = db.execute(
        "SELECT DISTINCT nspowner::regrole::text FROM pg_namespace"
        " WHERE nspname IN ('api', 'processor', 'ledger', 'notifier', 'ops')"
    ).fetchall()
    assert owners == [(role_name("owner"),)]


def test_each_service_role_may_use_its_own_schema(as_role: Any, settings: Settings) -> None:
    for role, access in ACCESS.items():
        if access.owns is None:
            continue
        conn = as_role(role)
        table = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s LIMIT 1",
            (access.owns,),
        ).fetchone()
        assert table is not None, role
        conn.execute(f"SELECT count(*) FROM {access.owns}.{table[0]}")


def test_a_grant_made_by_hand_is_taken_back_by_the_next_migrate(
    db: Conn, as_role: Any, settings: Settings
) -> None:
    db.execute(f"GRANT USAGE ON SCHEMA notifier TO {role_name('api')}")
    db.execute(f"GRANT SELECT ON notifier.endpoint_secrets TO {role_name('api')}")
    as_role("api").execute("SELECT secret_sealed FROM notifier.endpoint_secrets")  # it did take
    assert migrate(database_url(settings, "owner")) == []
    assert refused(as_role("api"), "SELECT secret_sealed FROM notifier.endpoint_secrets")


def test_a_table_a_migration_adds_gets_its_schemas_grants(
    db: Conn, as_role: Any, settings: Settings
) -> None:
    with connect(settings, "owner") as owner:
        owner.execute("CREATE TABLE notifier.added (id bigserial PRIMARY KEY, note text)")
        apply_grants(owner)
    notifier = as_role("notifier")
    notifier.execute("INSERT INTO notifier.added (note) VALUES ('mine')")
    assert refused(as_role("api"), "SELECT * FROM notifier.added")


def test_db_init_print_sql_shows_the_roles_and_changes_nothing(settings: Settings) -> None:
    done = flowpay("db", "init", "--print-sql", env=env_for(settings))
    assert done.returncode == 0, done.stderr
    for role in DATABASE_ROLES:
        assert f'CREATE ROLE "{role_name(role)}" LOGIN NOSUPERUSER' in done.stdout
    assert "REVOKE ALL ON DATABASE" in done.stdout
    assert "PASSWORD" not in done.stdout.replace("\\password", "")


def test_the_dev_stack_runs_each_role_as_itself_and_never_shows_a_password(
    base_settings: Settings,
) -> None:
    credentials = base_settings.dev.credentials
    assert credentials.stat().st_mode & 0o077 == 0
    passwords = {}
    for path in credentials.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    for line in (credentials / "postgres.pgpass").read_text().splitlines():
        *_, user, password = line.split(":", 4)
        passwords[user] = password
    for role in DATABASE_ROLES:
        with connect(base_settings, role) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (role_name(role),)
        assert passwords[role_name(role)] not in database_url(base_settings, role)
    shown = flowpay("dev", "status", "--json", env=env_for(base_settings))
    assert shown.returncode == 0, shown.stderr
    assert not [user for user, password in passwords.items() if password in shown.stdout]


def test_setups_setting_the_same_roles_at_once_all_succeed(settings: Settings) -> None:
    """Two `dev up` of one stack, or two `db init`, each set every role's password: PostgreSQL
    refuses concurrent changes to one role ("tuple concurrently updated") unless they queue."""
    user = "flowpay_test_concurrent_setup"

    def set_up(_: int) -> None:
        with psycopg.connect(admin_url(settings), autocommit=True) as conn:
            for _ in range(10):
                apply_roles(conn, [], {user: "not-a-secret"})

    with psycopg.connect(admin_url(settings), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
        admin.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(user)))
        try:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(set_up, range(8)))  # raises the first failure
        finally:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(user)))
