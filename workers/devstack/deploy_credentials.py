"""Credentials for ``docker-compose.yml``: `flowpay deploy credentials DIR` (made once, kept).

Under ``DIR`` (owner-only), for compose's ``env_file`` entries and mounts:

- ``passwords.json``: every generated password and the secrets key, made the first time and
  kept; the other files are written again from it on every run, so they always agree;
- ``postgres.env``: the PostgreSQL image's superuser; ``admin.env``: its URL, for `db init`;
- ``role-<role>.env``: one per database role, its URL as its own PostgreSQL role and, for the
  roles that use Kafka, its SCRAM principal (``flowpay-<role>``);
- ``secrets-key.env``: the key webhook signing secrets are encrypted with (the API, the
  notifier and the operator read it);
- ``kafka.env``: the broker's own password and every principal's, for its storage format's
  ``--add-scram``; ``kafka-admin.env``: the broker's super user as ``kafka.admin``, for
  `kafka acls apply`;
- ``tls/``: a CA and the broker's certificate for ``kafka_host`` (``ca.pem`` is what clients
  trust).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from workers.core.config import DATABASE_ROLES, KAFKA_ROLES
from workers.core.db import role_name
from workers.core.sealing import generate_key
from workers.devstack.paths import write_private
from workers.devstack.secure import BROKER_USER, username
from workers.devstack.tls import BrokerCertificates, make_broker_certificates

SUPERUSER = "postgres"
KEY = "secrets_key"


def make(directory: Path, *, db_host: str, kafka_host: str, database: str = "flowpay") -> Path:
    """Write every file (passwords made only when missing); returns ``passwords.json``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    stored = _passwords(directory / "passwords.json")
    if not BrokerCertificates.under(directory / "tls").exist():
        make_broker_certificates(directory / "tls", host=kafka_host)

    def url(user: str, password: str) -> str:
        return f"postgresql://{user}:{password}@{db_host}:5432/{database}"

    env: dict[str, dict[str, str]] = {
        "postgres": {
            "POSTGRES_USER": SUPERUSER,
            "POSTGRES_PASSWORD": stored[SUPERUSER],
            "POSTGRES_DB": database,
        },
        "admin": {"FLOWPAY_DATABASE__ADMIN_URL": url(SUPERUSER, stored[SUPERUSER])},
        "secrets-key": {"FLOWPAY_SECRETS__KEY": stored[KEY]},
        "kafka": {
            "KAFKA_BROKER_PASSWORD": stored[_kafka(BROKER_USER)],
            "KAFKA_SCRAM_USERS": " ".join(
                f"{username(r)}={stored[_kafka(r)]}" for r in KAFKA_ROLES
            ),
        },
        "kafka-admin": {
            "FLOWPAY_KAFKA__ADMIN__USERNAME": BROKER_USER,
            "FLOWPAY_KAFKA__ADMIN__PASSWORD": stored[_kafka(BROKER_USER)],
        },
    }
    for role in DATABASE_ROLES:
        own = {f"FLOWPAY_DATABASE__URLS__{role.upper()}": url(role_name(role), stored[role])}
        if role in KAFKA_ROLES:
            prefix = f"FLOWPAY_KAFKA__PRINCIPALS__{role.upper()}"
            own[f"{prefix}__USERNAME"] = username(role)
            own[f"{prefix}__PASSWORD"] = stored[_kafka(role)]
        env[f"role-{role}"] = own
    for name, values in env.items():
        lines = "".join(f"{key}={value}\n" for key, value in values.items())
        write_private(directory / f"{name}.env", lines.encode())
    return directory / "passwords.json"


def _kafka(user: str) -> str:
    return f"kafka:{user}"


def _passwords(path: Path) -> dict[str, str]:
    stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    wanted = [*DATABASE_ROLES, SUPERUSER, *(_kafka(u) for u in (BROKER_USER, *KAFKA_ROLES))]
    # URL-safe characters only: they go into URLs, env files and JAAS lines unquoted.
    made = {name: stored.get(name) or secrets.token_urlsafe(24) for name in wanted}
    made[KEY] = stored.get(KEY) or generate_key()
    if made != stored:
        write_private(path, json.dumps(made, indent=2).encode())
    return made
