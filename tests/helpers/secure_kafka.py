"""A secured local broker (SASL_SSL, SCRAM-SHA-512, ACLs) started as `flowpay dev up --secure`.

One broker serves the whole session: the pytest-xdist workers share it (the first starts it,
the last one out stops it), so that the suite pays for one JVM start however its tests spread.
Each test then works under its own topic prefix, with the ACLs `flowpay kafka acls apply` gives
that prefix and topics the operator creates.
"""

from __future__ import annotations

import fcntl
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import LOCAL_RECEIVERS, env_for, override
from tests.helpers.shared_stack import shared_stack
from workers.core import kafka_acls
from workers.core.config import Settings, load_settings
from workers.core.db import admin_url
from workers.core.kafka import create_topics, delete_topics
from workers.core.ports import free_port
from workers.devstack import secure
from workers.devstack.paths import StackPaths


@dataclass(frozen=True)
class SecureBroker:
    user_config: Path  # the configuration `dev up --secure` was given
    config: Path  # what `dev up --secure` wrote for the roles
    settings: Settings  # the same, as the test process reads it

    def env(self, settings: Settings) -> dict[str, str]:
        """For `flowpay` subprocesses: ``settings``' database and topics on this broker."""
        return {**env_for(settings), "FLOWPAY_CONFIG": str(self.config)}

    @contextmanager
    def principals(self, *, changing: bool = False) -> Iterator[None]:
        """Held by a test that runs roles on this broker (shared), or that takes a principal's
        credentials away for a while (``changing``: alone). The xdist workers share the broker,
        and a role started while its credentials are gone is refused."""
        path = StackPaths.of(self.settings).home / "principals.lock"
        with path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if changing else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def shared_secure_broker(shared_dir: Path, base: Settings) -> Iterator[SecureBroker]:
    with shared_stack(
        shared_dir,
        lambda: _user_config(shared_dir / "home", base),
        ("--secure",),
        lambda given: secure.SecureFiles.of(load_settings(given)).config,
    ) as user_config:
        config = secure.SecureFiles.of(load_settings(user_config)).config
        yield SecureBroker(user_config, config, load_settings(config))


def _user_config(home: Path, base: Settings) -> dict[str, object]:
    return {
        "database": {"url": admin_url(base)},
        "dev": {
            "home": str(home),
            "kafka_port": free_port(),
            "kafka_controller_port": free_port(),
            # The jars the shared stack resolved, as an existing distribution.
            "kafka_home": str(StackPaths.of(base).kafka_dir),
            "kafka_heap": "384m",
        },
        "kafka": {"partitions": 2, "session_timeout_ms": 6000},
        "metrics": {"enabled": False},
    }


@contextmanager
def secured_prefix(broker: SecureBroker, database: Settings) -> Iterator[Settings]:
    """``database``'s database with topics of a fresh prefix on the broker, ACLs and all."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    settings = override(broker.settings, "kafka", topic_prefix=prefix)
    settings = settings.model_copy(
        update={"database": database.database, "secrets": database.secrets}
    )
    # The tests' webhook receivers listen on 127.0.0.1 over http, as the other tests' do.
    settings = override(settings, "notifier", **LOCAL_RECEIVERS)
    # As `flowpay kafka acls apply` run with the cluster administrator's credentials.
    kafka_acls.apply(secure.as_broker(settings), kafka_acls.plan(settings).grants)
    create_topics(settings)  # as the operator, which the ACLs allow
    try:
        yield settings
    finally:
        delete_topics(settings)
