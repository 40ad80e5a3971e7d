from __future__ import annotations

import pytest

from tests.helpers.db import Conn
from tests.helpers.waiting import wait_for
from workers.core.config import Settings
from workers.core.db import database_url, mapped_errors
from workers.core.errors import ConstraintViolation
from workers.core.kafka import create_topics, delete_topics, describe_topics, make_admin
from workers.core.sql import parse_queries
from workers.core.topics import topics
from workers.migrations.runner import migrate


def test_migrating_an_up_to_date_database_applies_nothing_and_keeps_data(
    db: Conn, settings: Settings
) -> None:
    db.execute("INSERT INTO api.merchants (id, name) VALUES ('mer_keep', 'Keep')")
    assert migrate(database_url(settings, "owner")) == []
    assert migrate(database_url(settings, "owner")) == []
    assert db.execute("SELECT name FROM api.merchants WHERE id = 'mer_keep'").fetchone() == (
        "Keep",
    )


def test_each_service_has_its_own_schema(db: Conn) -> None:
    names = {r[0] for r in db.execute("SELECT schema_name FROM information_schema.schemata")}
    assert {"api", "processor", "ledger", "notifier"} <= names


def test_every_amount_column_is_bigint(db: Conn) -> None:
    rows = db.execute(
        """SELECT table_schema, table_name, column_name, data_type
           FROM information_schema.columns
           WHERE table_schema IN ('api', 'processor', 'ledger', 'notifier')
             AND (column_name LIKE '%amount%' OR column_name LIKE '%balance%')"""
    ).fetchall()
    assert rows, "no amount columns found"
    assert all(r[3] == "bigint" for r in rows), rows


def test_database_refuses_a_non_positive_amount_by_named_constraint(db: Conn) -> None:
    db.execute("INSERT INTO api.merchants (id, name) VALUES ('mer_a', 'A')")
    with pytest.raises(ConstraintViolation) as raised, mapped_errors():
        db.execute(
            "INSERT INTO api.payments (id, merchant_id, amount, currency, payment_method)"
            " VALUES ('pay_1', 'mer_a', 0, 'USD', 'pm_card_visa')"
        )
    assert raised.value.constraint == "payments_amount_range"


def test_named_queries_parse_and_refuse_duplicates() -> None:
    queries = parse_queries("-- name: one\nSELECT 1;\n\n-- name: two\nSELECT\n  2;\n")
    assert dict(queries) == {"one": "SELECT 1;", "two": "SELECT\n  2;"}
    with pytest.raises(ValueError, match="twice"):
        parse_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")


def test_topics_are_created_once_with_partitions_and_infinite_retention(
    base_settings: Settings, topic_prefix: str
) -> None:
    settings = base_settings.model_copy(
        update={
            "kafka": base_settings.kafka.model_copy(update={"topic_prefix": topic_prefix + "x"})
        }
    )
    names = topics(settings)
    assert create_topics(settings) == dict.fromkeys(names.all(), "created")
    assert create_topics(settings) == dict.fromkeys(names.all(), "exists")
    described = describe_topics(settings, names.all())
    assert described[names.payments] == {"partitions": 6, "retention.ms": "-1"}
    assert described[names.dead_letters]["retention.ms"] == "-1"
    # Commands are not replayed: a week is time enough for an executor to catch up.
    assert described[names.commands]["retention.ms"] == str(7 * 24 * 3600 * 1000)

    assert sorted(delete_topics(settings)) == sorted(names.all())

    def gone() -> bool:
        listed = make_admin(settings).list_topics(timeout=10).topics
        return not set(names.all()) & set(listed)

    wait_for(gone, what="the prefix's topics to be deleted")
    assert delete_topics(settings) == []
