"""Where an endpoint's signing secret is kept: sealed (AES-256-GCM, ``workers.core.sealing``).

``seal_secret`` is what is stored for a new secret, ``open_secret`` the secret back from what is
stored: the one pair every writer and reader of ``notifier.endpoints``' secret goes through. A
secret is sealed for its endpoint's id, so that a sealed value moved to another endpoint's row
does not open. Secrets stored before encryption (``secret_plain``) open as they are, until
``rotate`` seals them; ``rotate`` also re-seals every secret under a previous key with the
current one, after which that key can leave the configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from psycopg import Connection

from workers.core.errors import ConfigError
from workers.core.sealing import Keyring, Sealed, SealError
from workers.core.sql import load_queries

Q = load_queries("workers.notifier")
ROTATE_BATCH: Final = 500


def _context(endpoint_id: str) -> bytes:
    return f"flowpay notifier.endpoints {endpoint_id} secret".encode()


def seal_secret(keys: Keyring, endpoint_id: str, secret: str) -> dict[str, Any]:
    """The columns that store ``secret`` for the endpoint."""
    sealed = keys.seal(secret.encode(), _context(endpoint_id))
    return {"secret_key_id": sealed.key_id, "secret_sealed": sealed.blob}


def open_secret(
    keys: Keyring,
    endpoint_id: str,
    key_id: str | None,
    sealed: bytes | None,
    plain: str | None = None,
) -> str:
    """The endpoint's secret from its stored columns; SealError when it cannot be opened."""
    if sealed is None or key_id is None:
        if plain is None:
            raise SealError(f"endpoint {endpoint_id} has no secret")
        return plain
    blob = Sealed(key_id, bytes(sealed))
    return keys.open(blob, _context(endpoint_id)).decode()


def secret_to_sign(
    keys: Keyring, endpoint_id: str, key_id: str | None, sealed: bytes | None, plain: str | None
) -> tuple[str, str | None]:
    """The secret a delivery is signed with, or why it cannot be had (its key is not
    configured): the attempt is then recorded as failed, unsent, and goes again later."""
    try:
        return open_secret(keys, endpoint_id, key_id, sealed, plain), None
    except SealError as exc:
        return "", f"secret_unavailable: {exc}"


def rotate(conn: Connection[Any], keys: Keyring, progress: Callable[[int], None]) -> int:
    """Seal every secret not under the current key (or in plain text) with it, a batch per
    transaction; returns how many. ``progress(n)`` after each batch. Safe while notifiers run:
    each row is read and replaced under its lock, and every key it may be under still opens."""
    done = 0
    while True:
        with conn.transaction():
            params = {"current": keys.current_id, "limit": ROTATE_BATCH}
            rows = conn.execute(Q["secrets_stale"], params).fetchall()
            for endpoint_id, key_id, sealed, plain in rows:
                try:
                    secret = open_secret(keys, endpoint_id, key_id, sealed, plain)
                except SealError as exc:
                    raise ConfigError(
                        f"cannot re-seal endpoint {endpoint_id}'s secret: {exc}; add that key to"
                        " secrets.previous_keys and run `flowpay secrets rotate` again"
                    ) from None
                columns = seal_secret(keys, endpoint_id, secret)
                conn.execute(Q["secret_reseal"], {"id": endpoint_id, **columns})
        if not rows:
            return done
        done += len(rows)
        progress(len(rows))


def stale_count(conn: Connection[Any], keys: Keyring) -> int:
    """How many secrets ``rotate`` would seal again."""
    row = conn.execute(Q["secrets_stale_count"], {"current": keys.current_id}).fetchone()
    return 0 if row is None else int(row[0])


@dataclass(frozen=True)
class KeyUse:
    key_id: str | None  # None: plain text
    secrets: int
    state: str  # current | previous | unknown (not configured) | plain text


def key_use(conn: Connection[Any], keys: Keyring) -> list[KeyUse]:
    """How many secrets each key sealed, and whether the configuration holds that key."""
    uses = []
    for key_id, count in conn.execute(Q["secrets_by_key"]).fetchall():
        if key_id is None:
            state = "plain text"
        elif key_id == keys.current_id:
            state = "current"
        else:
            state = "previous" if keys.knows(key_id) else "unknown"
        uses.append(KeyUse(key_id, int(count), state))
    return uses


def check_keys(conn: Connection[Any], keys: Keyring) -> list[KeyUse]:
    """Raise ConfigError when some secret is sealed under a key the configuration lacks (the
    notifier could sign none of its webhooks); returns the use of each key."""
    uses = key_use(conn, keys)
    unknown = [u for u in uses if u.state == "unknown"]
    if unknown:
        ids = ", ".join(f"{u.key_id} ({u.secrets} secrets)" for u in unknown)
        raise ConfigError(
            f"webhook secrets are sealed under keys that neither secrets.key nor"
            f" secrets.previous_keys holds: {ids}"
        )
    return uses
