"""The local stack's generated credentials, under ``<dev.home>/credentials/`` (owner-only).

- ``postgres.pgpass``: one random password for the cluster's superuser and for each FlowPay
  role, in libpq's password-file format. The dev stack's connection strings name the file
  (``passfile=``), so libpq reads the password from it and no URL, log or output holds one.
- ``secrets.key``: the AES-256 key the stack's secrets are encrypted with (``[secrets] key``).

Each is made once and kept: the cluster and the database keep using them across restarts.
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from workers.core.config import AES_KEY_BYTES, DATABASE_ROLES, Settings
from workers.core.db import DEV_SUPERUSER, dev_passfile, role_name
from workers.core.sealing import dev_key_file
from workers.devstack.paths import write_private


def postgres_users() -> list[str]:
    """Every user the stack's cluster has a password for: its superuser, then FlowPay's roles."""
    return [DEV_SUPERUSER, *(role_name(r) for r in DATABASE_ROLES)]


def postgres_passwords(settings: Settings) -> dict[str, str]:
    """``{user: password}`` of the stack's cluster, made the first time (and for a new role)."""
    path = dev_passfile(settings)
    stored = _read_passfile(path)
    if all(user in stored for user in postgres_users()):
        return stored
    # URL-safe characters only: none of them needs escaping in a password file.
    made = {user: stored.get(user) or secrets.token_urlsafe(24) for user in postgres_users()}
    _private_dir(path.parent)
    lines = [f"*:*:*:{user}:{password}\n" for user, password in made.items()]
    write_private(path, "".join(lines).encode())
    return made


def ensure_secrets_key(settings: Settings) -> None:
    """The stack's secrets key, made the first time."""
    path = dev_key_file(settings)
    if path.exists():
        return
    _private_dir(path.parent)
    write_private(path, base64.b64encode(secrets.token_bytes(AES_KEY_BYTES)) + b"\n")


def _read_passfile(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        *_, user, password = line.split(":", 4)
        found[user] = password
    return found


def _private_dir(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
