"""`flowpay dev` on a stack of its own (own home, own ports), so the shared one is untouched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, flowpay
from tests.helpers.kafka import read_topic
from workers.core.config import Settings, load_settings
from workers.core.db import admin_url
from workers.core.kafka import create_topics, make_producer, produce_sync
from workers.core.ports import free_port
from workers.core.topics import topics
from workers.devstack.paths import StackPaths
from workers.devstack.procs import wait_gone


@pytest.fixture
def own_stack(base_settings: Settings) -> Iterator[dict[str, str]]:
    home = ROOT / ".flowpay" / "test-stacks" / uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWPAY_")}
    env |= {
        "FLOWPAY_DEV__HOME": str(home),
        "FLOWPAY_DEV__PG_PORT": str(free_port()),
        "FLOWPAY_DEV__KAFKA_PORT": str(free_port()),
        "FLOWPAY_DEV__KAFKA_CONTROLLER_PORT": str(free_port()),
        # Reuse the jars the shared stack resolved, as an existing distribution.
        "KAFKA_HOME": str(StackPaths.of(base_settings).kafka_dir),
    }
    try:
        yield env
    finally:
        flowpay("dev", "down", env=env)
        shutil.rmtree(home, ignore_errors=True)


def _status(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    done = flowpay("dev", "status", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return {c["name"]: c for c in json.loads(done.stdout)["components"]}


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key, value in env.items():
        if key.startswith("FLOWPAY_"):
            monkeypatch.setenv(key, value)
    return load_settings()


def _up(env: dict[str, str]) -> None:
    done = flowpay("dev", "up", "--infra-only", env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_up_twice_reuses_then_down_stops(own_stack: dict[str, str]) -> None:
    _up(own_stack)
    first = _status(own_stack)
    assert first["postgres"]["state"] == "running"
    assert first["kafka"]["state"] == "running"

    _up(own_stack)
    again = _status(own_stack)
    assert again["postgres"]["pid"] == first["postgres"]["pid"]
    assert again["kafka"]["pid"] == first["kafka"]["pid"]

    done = flowpay("dev", "down", env=own_stack, timeout=120)
    assert done.returncode == 0, done.stderr
    after = _status(own_stack)
    assert after["postgres"]["state"] == "stopped"
    assert after["kafka"]["state"] == "stopped"
    for name in ("postgres", "kafka"):
        assert wait_gone(first[name]["pid"], "", timeout_s=1)


def test_killed_components_come_back_with_their_data(
    own_stack: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _up(own_stack)
    settings = _settings(own_stack, monkeypatch)
    url = admin_url(settings)  # the stack's superuser, with its generated password
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO api.merchants (id, name) VALUES ('mer_survivor', 'Survivor')")
    names = topics(settings)
    create_topics(settings)
    produce_sync(make_producer(settings, "operator"), names.payments, key=b"k", value=b"kept")

    before = _status(own_stack)
    for name in ("postgres", "kafka"):
        os.kill(before[name]["pid"], signal.SIGKILL)
    for name in ("postgres", "kafka"):
        assert wait_gone(before[name]["pid"], "", timeout_s=30)
    assert _status(own_stack)["kafka"]["state"] == "stopped"

    _up(own_stack)
    after = _status(own_stack)
    assert after["postgres"]["state"] == "running"
    assert after["kafka"]["state"] == "running"
    assert after["kafka"]["pid"] != before["kafka"]["pid"]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT name FROM api.merchants WHERE id = 'mer_survivor'").fetchone()
    assert row == ("Survivor",)
    [message] = read_topic(settings, names.payments, 1)
    assert message.value() == b"kept"


def test_failed_start_reports_the_last_log_lines(own_stack: dict[str, str]) -> None:
    # Something else holds Kafka's port, so the broker cannot bind it and exits.
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(own_stack["FLOWPAY_DEV__KAFKA_PORT"])))
        squatter.listen()
        done = flowpay("dev", "up", "--infra-only", env=own_stack, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "Kafka exited while starting" in done.stderr
    assert "kafka.log" in done.stderr


def test_a_taken_postgres_port_fails_fast_with_the_log(own_stack: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(own_stack["FLOWPAY_DEV__PG_PORT"])))
        squatter.listen()
        done = flowpay("dev", "up", "--infra-only", env=own_stack, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "PostgreSQL did not start" in done.stderr
    assert "Address already in use" in done.stderr
