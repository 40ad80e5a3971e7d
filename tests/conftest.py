"""Fixtures on the real stack: the project's own PostgreSQL and Kafka, started once per session.

Tests isolate themselves: a fresh database cloned from a template, and topics under a unique prefix.
Every role connects to a test's database as itself (``database.urls``), as in production, so the
suite runs on the roles' least privileges; a test's own look into the database goes through
``database.admin_url`` (the dev cluster's superuser), as a DBA's would. Webhook secrets are sealed
with a key of the session's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from filelock import FileLock
from psycopg.conninfo import make_conninfo
from pydantic import SecretStr

from workers.core.config import DATABASE_ROLES, Settings, load_settings
from workers.core.db import admin_url, database_url
from workers.core.db_roles import adopt, database_access, public_schema_access
from workers.core.kafka import bootstrap_servers, create_topics, delete_topics
from workers.core.sealing import generate_key
from workers.devstack import stack
from workers.migrations.runner import migrate

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE_DB = "flowpay_test_template"
# The key every test's settings (and every role a test starts) seal webhook secrets with.
SECRETS_KEY = generate_key()


def override(settings: Settings, section: str, **values: Any) -> Settings:
    """A copy of ``settings`` with some keys of one section changed."""
    current = getattr(settings, section)
    return settings.model_copy(update={section: current.model_copy(update=values)})


# The tests' webhook receivers listen on 127.0.0.1 over http: both URL rules are lifted for
# them; tests of the rules turn them off again.
LOCAL_RECEIVERS = {"allow_insecure_http": True, "allow_private_targets": True}


def env_for(settings: Settings) -> dict[str, str]:
    """Environment that makes a `flowpay` subprocess use the same database and topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPAY_")}
    if not settings.database.local:
        for role in DATABASE_ROLES:
            env[f"FLOWPAY_DATABASE__URLS__{role.upper()}"] = database_url(settings, role)
        env["FLOWPAY_DATABASE__ADMIN_URL"] = admin_url(settings)
    if settings.secrets.key is not None:
        env["FLOWPAY_SECRETS__KEY"] = settings.secrets.key.get_secret_value()
    env["FLOWPAY_KAFKA__TOPIC_PREFIX"] = settings.kafka.topic_prefix
    env["FLOWPAY_KAFKA__BOOTSTRAP_SERVERS"] = bootstrap_servers(settings)  # every node
    env["FLOWPAY_DEV__HOME"] = str(settings.dev.home.resolve())
    env["FLOWPAY_KAFKA__SESSION_TIMEOUT_MS"] = str(settings.kafka.session_timeout_ms)
    # Roles of parallel tests would all want the default metrics ports; tests that read
    # metrics turn them on, on free ports.
    env["FLOWPAY_METRICS__ENABLED"] = "false"
    for key in LOCAL_RECEIVERS:
        env[f"FLOWPAY_NOTIFIER__{key.upper()}"] = str(getattr(settings.notifier, key)).lower()
    return env


def flowpay(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowpay_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.fixture(scope="session")
def base_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    # A killed consumer's partitions move on after 6 s rather than 45 s.
    settings = override(load_settings(), "kafka", session_timeout_ms=6000)
    settings = override(settings, "notifier", **LOCAL_RECEIVERS)
    # pytest-xdist workers share one stack: the first to get the lock starts it.
    with FileLock(str(tmp_path_factory.getbasetemp().parent / "flowpay-stack.lock")):
        stack.up(settings, infra_only=True, config_file=None, say=lambda _step: None)
    return settings


def _server_url(settings: Settings, dbname: str) -> str:
    return make_conninfo(admin_url(settings), dbname=dbname)


@pytest.fixture(scope="session")
def template_db(base_settings: Settings, worker_id: str) -> str:
    name = f"{TEMPLATE_DB}_{worker_id}"
    with psycopg.connect(_server_url(base_settings, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    # As `flowpay db init` sets a database up (the roles exist: `dev up` made them), then the
    # migrations as the owner, as every deployment gets its schema (schema.sql is checked
    # against them).
    with psycopg.connect(_server_url(base_settings, name), autocommit=True) as conn:
        for statement in [*database_access(name), public_schema_access(), adopt()]:
            conn.execute(statement)
    migrate(make_conninfo(database_url(base_settings, "owner"), dbname=name))
    return name


def _new_database(base: Settings, template: str) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(_server_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")
        # Who may connect is the database's own (a copy does not inherit it).
        for statement in database_access(name):
            conn.execute(statement)
    return name


def _drop_database(base: Settings, name: str) -> None:
    with psycopg.connect(_server_url(base, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _new_topics(base: Settings) -> str:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    create_topics(override(base, "kafka", topic_prefix=prefix))
    return prefix


def isolated_database(base: Settings, dbname: str) -> Settings:
    """``base`` with every role, and the administrator, on database ``dbname``."""
    urls = {
        role: SecretStr(make_conninfo(database_url(base, role), dbname=dbname))
        for role in DATABASE_ROLES
    }
    with_db = override(base, "database", urls=urls, admin_url=SecretStr(_server_url(base, dbname)))
    return override(with_db, "secrets", key=SecretStr(SECRETS_KEY))


def _isolated(base: Settings, dbname: str, prefix: str) -> Settings:
    return override(isolated_database(base, dbname), "kafka", topic_prefix=prefix)


@pytest.fixture
def topic_prefix(base_settings: Settings) -> Iterator[str]:
    """A unique prefix whose topics exist (deleted after the test)."""
    prefix = _new_topics(base_settings)
    yield prefix
    delete_topics(override(base_settings, "kafka", topic_prefix=prefix))


@pytest.fixture
def settings(base_settings: Settings, template_db: str) -> Iterator[Settings]:
    """Settings for one test: its own database and its own topics on the shared stack."""
    yield from _isolated_for_a_while(base_settings, template_db)


@pytest.fixture(scope="module")
def module_settings(base_settings: Settings, template_db: str) -> Iterator[Settings]:
    """Like ``settings``, shared by one module's tests (for servers worth starting once)."""
    yield from _isolated_for_a_while(base_settings, template_db)


def _isolated_for_a_while(base: Settings, template_db: str) -> Iterator[Settings]:
    # Dropped after use: a session leaves hundreds of topic sets, which slow the one broker.
    name = _new_database(base, template_db)
    isolated = _isolated(base, name, _new_topics(base))
    yield isolated
    _drop_database(base, name)
    delete_topics(isolated)


@pytest.fixture
def db(settings: Settings) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """The test's database, as its administrator."""
    with psycopg.connect(admin_url(settings), autocommit=True) as conn:
        yield conn


def pytest_configure(config: pytest.Config) -> None:
    """SIGINT heard, in this process and in every one the tests start: a suite started in the
    background of a non-interactive shell inherits SIGINT ignored, and so would each role and
    CLI the tests stop with it (``flowpay listen`` would never see its Ctrl-C)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
