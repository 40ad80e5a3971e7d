"""Where endpoints' signing secrets are kept: the one module that writes and reads them.

An endpoint has one or more secrets (``notifier.endpoint_secrets``): after a rotation the earlier
ones sign too until they expire, so every delivery meanwhile carries a signature by each
(Standard Webhooks allows several) and a merchant can switch its verifier over without a gap.
Each is stored sealed (AES-256-GCM, ``workers.core.webhook_secrets``) for its endpoint's id, so
that a sealed value moved to another endpoint does not open: ``store_secret`` keeps one as it
came (the API sealed it before it went on Kafka, the CLI seals its own with ``seal_secret``),
``load_secrets`` opens those that sign now. Secrets stored before encryption
(``secret_plain``) open as they are, until ``rotate`` seals them; ``rotate`` also re-seals every
secret under a previous key with the current one, after which that key can leave the
configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from psycopg import AsyncConnection, Connection

from workers.core.errors import ConfigError
from workers.core.sealing import Keyring, Sealed, SealError
from workers.core.sql import load_queries
from workers.core.webhook_secrets import open_webhook_secret, seal_webhook_secret

Q = load_queries("workers.notifier")
ROTATE_BATCH: Final = 500


def seal_secret(keys: Keyring, endpoint_id: str, secret: str) -> Sealed:
    """What is stored for a new secret of the endpoint."""
    return seal_webhook_secret(keys, endpoint_id, secret)


def open_secret(
    keys: Keyring,
    endpoint_id: str,
    key_id: str | None,
    sealed: bytes | None,
    plain: str | None = None,
) -> str:
    """A secret from its stored columns; SealError when it cannot be opened."""
    if sealed is None or key_id is None:
        if plain is None:
            raise SealError(f"endpoint {endpoint_id} has no secret")
        return plain
    return open_webhook_secret(keys, endpoint_id, Sealed(key_id, bytes(sealed)))


def store_secret(conn: Connection[Any], endpoint_id: str, sealed: Sealed) -> None:
    """Keep a new secret of an endpoint, sealed for it (it signs from now on), in the caller's
    transaction."""
    params = {"endpoint_id": endpoint_id, "key_id": sealed.key_id, "sealed": sealed.blob}
    conn.execute(Q["secret_insert"], params)


def expire_secrets(conn: Connection[Any], endpoint_id: str, at: datetime | None) -> None:
    """The endpoint's secrets kept so far stop signing ``at`` (None: at once), unless they
    were to stop earlier."""
    conn.execute(Q["secrets_expire"], {"endpoint_id": endpoint_id, "at": at})


@dataclass(frozen=True)
class Signing:
    """An endpoint's secrets that sign now, newest first; or why they cannot be had (a key is
    not configured): the attempt is then recorded as failed, unsent, and goes again later."""

    secrets: tuple[str, ...]
    error: str | None = None


async def load_secrets(
    conn: AsyncConnection[Any], keys: Keyring, endpoint_ids: Iterable[str]
) -> dict[str, Signing]:
    """Each endpoint's secrets that sign now, opened."""
    params = {"endpoint_ids": sorted(set(endpoint_ids))}
    cursor = await conn.execute(Q["secrets_signing"], params)
    opened: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    for endpoint_id, key_id, sealed, plain in await cursor.fetchall():
        try:
            opened.setdefault(endpoint_id, []).append(
                open_secret(keys, endpoint_id, key_id, sealed, plain)
            )
        except SealError as exc:
            failed.setdefault(endpoint_id, f"secret_unavailable: {exc}")
    return {
        endpoint_id: Signing((), failed[endpoint_id])
        if endpoint_id in failed
        else Signing(tuple(secrets))
        for endpoint_id, secrets in opened.items()
    }


def no_secret(endpoint_id: str) -> Signing:
    return Signing((), f"secret_unavailable: endpoint {endpoint_id} has no secret")


def rotate(conn: Connection[Any], keys: Keyring, progress: Callable[[int], None]) -> int:
    """Seal every secret not under the current key (or in plain text) with it, a batch per
    transaction; returns how many. ``progress(n)`` after each batch. Safe while notifiers run:
    each row is read and replaced under its lock, and every key it may be under still opens."""
    done = 0
    while True:
        with conn.transaction():
            params = {"current": keys.current_id, "limit": ROTATE_BATCH}
            rows = conn.execute(Q["secrets_stale"], params).fetchall()
            for secret_id, endpoint_id, key_id, sealed, plain in rows:
                try:
                    secret = open_secret(keys, endpoint_id, key_id, sealed, plain)
                except SealError as exc:
                    raise ConfigError(
                        f"cannot re-seal endpoint {endpoint_id}'s secret: {exc}; add that key to"
                        " secrets.previous_keys and run `flowpay secrets rotate` again"
                    ) from None
                again = seal_secret(keys, endpoint_id, secret)
                conn.execute(
                    Q["secret_reseal"],
                    {"id": secret_id, "key_id": again.key_id, "sealed": again.blob},
                )
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
