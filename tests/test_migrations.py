"""The versioned migrations against the real PostgreSQL 15: they give exactly schema.sql's schema,
upgrade a database holding data in place, and a failure leaves the database as it was."""

from __future__ import annotations

import difflib
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.conftest import ROOT, env_for, flowpay
from tests.helpers.db import Conn
from workers.core.config import Settings
from workers.core.db import admin_url
from workers.devstack.postgres import BIN_DIR
from workers.migrations.runner import VERSIONS, MigrationError, migrate, status

HISTORIES = {"api", "processor", "ledger", "notifier", "ops", "orchestrator"}
# Every migration FlowPay ships, by revision: <history>_<NNNN>.
SHIPPED = sorted(
    p.stem[: p.stem.index("_") + 5] for p in VERSIONS.glob("*/*_[0-9][0-9][0-9][0-9]_*.sql")
)
# The schema as `flowpay db init` made it before migrations began (schema.sql of that time).
BEFORE_MIGRATIONS = ROOT / "tests" / "fixtures" / "schema_before_migrations.sql"


def after_head(history: str, step: int = 1) -> int:
    """The number of a test migration ``step`` past the last one FlowPay ships in ``history``."""
    return max(int(r[-4:]) for r in SHIPPED if r.startswith(f"{history}_")) + step


def revision(history: str, number: int) -> str:
    return f"{history}_{number:04d}"


@pytest.fixture
def new_database(base_settings: Settings) -> Iterator[Callable[[], str]]:
    """Makes empty databases (dropped after the test); each call gives one's URL."""
    server = make_conninfo(admin_url(base_settings), dbname="postgres")
    names: list[str] = []

    def make() -> str:
        name = f"m_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        names.append(name)
        return make_conninfo(admin_url(base_settings), dbname=name)

    yield make
    with psycopg.connect(server, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def schema_dump(url: str) -> list[str]:
    """``pg_dump --schema-only`` without what differs between two dumps of one schema: comments,
    session settings, the random key of ``\\restrict``, blank lines, and Alembic's own table."""
    dumped = subprocess.run(
        [
            str(BIN_DIR / "pg_dump"),
            "--schema-only",
            "--no-owner",
            "--no-privileges",
            "--exclude-table=public.alembic_version",
            f"--dbname={url}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    skipped = ("--", "SET ", "SELECT pg_catalog.set_config(", "\\restrict ", "\\unrestrict ")
    return [line for line in dumped.splitlines() if line.strip() and not line.startswith(skipped)]


def assert_same_schema(got: list[str], expected: list[str], what: str) -> None:
    diff = "\n".join(difflib.unified_diff(expected, got, "expected", what, lineterm="", n=2))
    assert got == expected, f"{what} differs:\n{diff}"


def write_migration(
    root: Path, history: str, number: int, sql: str, revises: int | None = None
) -> None:
    """A migration file pair of the kind under versions/, in another location."""
    revises = number - 1 if revises is None else revises
    folder = root / history
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{history}_{number:04d}_test"
    (folder / f"{stem}.sql").write_text(sql)
    (folder / f"{stem}.py").write_text(
        f'"""Test migration {number}."""\n\n'
        "from workers.migrations.steps import run_sql_file\n\n"
        f'revision = "{history}_{number:04d}"\n'
        f'down_revision = "{history}_{revises:04d}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n    run_sql_file(__file__)\n"
    )


def applied(url: str, locations: tuple[Path, ...] = (VERSIONS,)) -> list[str]:
    return [m.revision for m in status(url, locations=locations) if m.applied]


def at_the_baseline_with_rows(url: str) -> list[tuple[Any, ...]]:
    """Migrates ``url``, then adds a merchant, a payment that changed once (the change trigger
    ran) and the processor's view of it; returns those rows."""
    migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        add_rows(conn)
        return rows(conn)


def add_rows(conn: Conn) -> None:
    conn.execute("INSERT INTO api.merchants (id, name) VALUES ('mer_keep', 'Keep')")
    conn.execute(
        "INSERT INTO api.payments (id, merchant_id, amount, currency, payment_method)"
        " VALUES ('pay_keep', 'mer_keep', 1999, 'EUR', 'pm_card_visa')"
    )
    conn.execute("UPDATE api.payments SET status = 'processing' WHERE id = 'pay_keep'")
    conn.execute(
        "INSERT INTO processor.payments (payment_id, merchant_id, amount, currency,"
        " payment_method, correlation_id, state, traceparent)"
        " VALUES ('pay_keep', 'mer_keep', 1999, 'EUR', 'pm_card_visa', 'c1', 'processing', 't1')"
    )


def rows(conn: Conn) -> list[tuple[Any, ...]]:
    return [
        *conn.execute("SELECT id, name FROM api.merchants"),
        *conn.execute("SELECT id, amount, currency, status, version FROM api.payments"),
        *conn.execute("SELECT payment_id, version, status FROM api.payment_changes"),
        *conn.execute("SELECT payment_id, state, traceparent FROM processor.payments"),
    ]


def test_the_migrations_from_an_empty_database_give_exactly_schema_sql(
    new_database: Callable[[], str],
) -> None:
    migrated, from_file = new_database(), new_database()
    assert [m.revision for m in migrate(migrated)] == SHIPPED
    with psycopg.connect(from_file, autocommit=True) as conn:
        conn.execute((ROOT / "schema.sql").read_bytes())
    assert_same_schema(schema_dump(migrated), schema_dump(from_file), "the migrated schema")


def test_a_database_made_before_migrations_adopts_the_history_keeping_its_data(
    new_database: Callable[[], str],
) -> None:
    reference, old = new_database(), new_database()
    migrate(reference)
    with psycopg.connect(old, autocommit=True) as conn:
        conn.execute(BEFORE_MIGRATIONS.read_bytes())
        # As an earlier schema.sql left it: without the later columns, with the NOTIFY triggers.
        conn.execute("ALTER TABLE processor.payments DROP COLUMN traceparent")
        conn.execute(
            "ALTER TABLE notifier.deliveries DROP COLUMN correlation_id, DROP COLUMN traceparent"
        )
        conn.execute(
            "CREATE FUNCTION api.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_notify('flowpay_outbox', TG_TABLE_SCHEMA); RETURN NULL; END $$"
        )
        for table in ("api.outbox", "processor.outbox"):
            trigger = table.replace(".", "_") + "_notify"
            conn.execute(
                f"CREATE TRIGGER {trigger} AFTER INSERT ON {table}"
                " FOR EACH STATEMENT EXECUTE FUNCTION api.notify_outbox()"
            )
        conn.execute("INSERT INTO api.merchants (id, name) VALUES ('mer_old', 'Old')")
    assert [m.revision for m in migrate(old)] == SHIPPED
    assert_same_schema(schema_dump(old), schema_dump(reference), "the adopted schema")
    with psycopg.connect(old) as conn:
        assert conn.execute("SELECT id, name FROM api.merchants").fetchall() == [("mer_old", "Old")]


def test_a_database_at_the_baseline_holding_data_upgrades_in_place(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    before = at_the_baseline_with_rows(url)
    number = after_head("api")
    write_migration(
        tmp_path,
        "api",
        number,
        "ALTER TABLE api.merchants ADD COLUMN country text;\n"
        "UPDATE api.merchants SET country = 'DE';\n"
        "ALTER TABLE api.merchants ALTER COLUMN country SET NOT NULL;\n"
        "CREATE INDEX merchants_by_country ON api.merchants (country);\n",
    )
    locations = (VERSIONS, tmp_path)
    new = revision("api", number)
    assert [m.revision for m in status(url, locations=locations) if not m.applied] == [new]
    assert [m.revision for m in migrate(url, locations=locations)] == [new]
    with psycopg.connect(url) as conn:
        assert rows(conn) == before
        assert conn.execute("SELECT country FROM api.merchants").fetchall() == [("DE",)]
    assert applied(url, locations) == sorted([*SHIPPED, new])
    assert migrate(url, locations=locations) == []


def test_a_failing_migration_leaves_the_database_as_it_was(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    before = at_the_baseline_with_rows(url)
    dumped = schema_dump(url)
    # The first applies; the second changes more, then fails on the data: the run is one
    # transaction.
    first, second = after_head("api"), after_head("api", 2)
    write_migration(tmp_path, "api", first, "CREATE TABLE api.extra (id int PRIMARY KEY);\n")
    write_migration(
        tmp_path,
        "api",
        second,
        "ALTER TABLE api.payments ADD COLUMN fee bigint NOT NULL DEFAULT 0;\n"
        "ALTER TABLE api.payments ADD CONSTRAINT fee_below_one CHECK (amount < 1);\n",
    )
    locations = (VERSIONS, tmp_path)
    with pytest.raises(
        MigrationError,
        match=rf"no migration was applied: migration {revision('api', second)}_test failed: "
        r".*fee_below_one",
    ):
        migrate(url, locations=locations)
    assert_same_schema(schema_dump(url), dumped, "the schema after the failed run")
    with psycopg.connect(url) as conn:
        assert rows(conn) == before
    assert applied(url, locations) == SHIPPED


def test_a_database_migrated_by_a_newer_version_is_refused_with_a_clear_error(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    newer = after_head("ops")
    write_migration(tmp_path, "ops", newer, "CREATE TABLE ops.newer (id int);\n")
    migrate(url, locations=(VERSIONS, tmp_path))
    for look in (status, migrate):
        with pytest.raises(
            MigrationError, match=rf"{revision('ops', newer)}.* unknown to this FlowPay"
        ):
            look(url)
    assert applied(url, (VERSIONS, tmp_path)) == sorted([*SHIPPED, revision("ops", newer)])


def test_every_history_is_numbered_and_a_gap_is_refused(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    url = new_database()
    histories = {m.history for m in status(url)}
    assert histories == HISTORIES
    head = after_head("api", 0)
    gap = after_head("api")
    write_migration(tmp_path, "api", gap + 1, "SELECT 1;\n", revises=head)  # none numbered gap
    with pytest.raises(MigrationError, match=f"api: no migration numbered {gap:04d}"):
        migrate(url, locations=(VERSIONS, tmp_path))
    assert applied(url) == []


def test_db_migrate_and_status_commands(
    base_settings: Settings, new_database: Callable[[], str]
) -> None:
    env = env_for(base_settings)
    env["FLOWPAY_DATABASE__URL"] = new_database()
    pending = flowpay("db", "status", "--json", env=env)
    assert pending.returncode == 0, pending.stderr
    assert json.loads(pending.stdout)["pending"] == len(SHIPPED)
    done = flowpay("db", "migrate", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert [m["revision"] for m in json.loads(done.stdout)["applied"]] == SHIPPED
    now = json.loads(flowpay("db", "status", "--json", env=env).stdout)
    assert now["pending"] == 0
    assert {m["state"] for m in now["migrations"]} == {"applied"}
    again = flowpay("db", "init", env=env)
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stdout


def test_an_upgrade_fills_the_balance_of_merchants_paid_before_payouts(
    new_database: Callable[[], str], tmp_path: Path
) -> None:
    """api 0009: a merchant whose payments predate the balance projection gets its balance from
    them (captures less refunds, less payouts not failed); a row the read model made since is
    recomputed over the whole history."""
    url = new_database()
    number = int(next(VERSIONS.glob("api/api_*_balance_backfill.sql")).name[4:8])
    before = tmp_path / "versions"

    def later(_folder: str, names: list[str]) -> list[str]:
        return [
            n for n in names if n == "__pycache__" or (n[:4] == "api_" and int(n[4:8]) >= number)
        ]

    shutil.copytree(VERSIONS, before, ignore=later)
    migrate(url, locations=(before,))
    assert revision("api", number) not in applied(url, (before,))
    succeeded = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO api.merchants (id, name)"
            " VALUES ('mer_old', 'Old'), ('mer_new', 'New'), ('mer_mixed', 'Mixed')"
        )
        for pid, merchant, amount, currency, status, received, refunded in (
            ("pay_auto", "mer_old", 1000, "EUR", "succeeded", 0, 0),  # before amount_received
            ("pay_partial", "mer_old", 800, "EUR", "succeeded", 500, 0),
            ("pay_refunded", "mer_old", 700, "EUR", "succeeded", 700, 200),
            ("pay_whole", "mer_old", 300, "EUR", "refunded", 300, 300),
            ("pay_failed", "mer_old", 900, "EUR", "failed", 0, 0),
            ("pay_flight", "mer_old", 400, "EUR", "processing", 0, 0),
            ("pay_usd", "mer_old", 250, "USD", "succeeded", 250, 0),
            ("pay_kept", "mer_new", 600, "EUR", "succeeded", 600, 0),
            ("pay_before", "mer_mixed", 900, "EUR", "succeeded", 900, 0),
            ("pay_after", "mer_mixed", 100, "EUR", "succeeded", 100, 0),
        ):
            conn.execute(
                "INSERT INTO api.payments (id, merchant_id, amount, currency, payment_method,"
                " status, amount_received, refunded_amount) VALUES (%s, %s, %s, %s,"
                " 'pm_card_visa', %s, %s, %s)",
                (pid, merchant, amount, currency, status, received, refunded),
            )
        conn.execute(
            "INSERT INTO api.events (id, merchant_id, payment_id, type, created_at, data)"
            " VALUES (%s, 'mer_old', 'pay_auto', 'payment.succeeded', now(), '{}')",
            (succeeded,),
        )
        # mer_new paid after api 0006: the read model keeps its row (less its payout); mer_mixed
        # was paid before and after, and its row counts only what came after.
        conn.execute(
            "INSERT INTO api.balances (merchant_id, currency, available)"
            " VALUES ('mer_new', 'EUR', 450), ('mer_mixed', 'EUR', 100)"
        )
        conn.execute(
            "INSERT INTO api.payouts (id, merchant_id, amount, currency, status, created_at,"
            " updated_at) VALUES ('po_1', 'mer_new', 150, 'EUR', 'paid', now(), now())"
        )

    assert revision("api", number) in [m.revision for m in migrate(url)]

    with psycopg.connect(url) as conn:
        balances = conn.execute(
            "SELECT merchant_id, currency, available FROM api.balances ORDER BY 1, 2"
        ).fetchall()
        counted = conn.execute("SELECT event_id FROM api.balance_events").fetchall()
    assert balances == [
        ("mer_mixed", "EUR", 1000),
        ("mer_new", "EUR", 450),
        ("mer_old", "EUR", 1000 + 500 + 500),
        ("mer_old", "USD", 250),
    ]
    # The succeeded event, should the read model hear it again, is not credited twice.
    assert counted == [(succeeded,)]
