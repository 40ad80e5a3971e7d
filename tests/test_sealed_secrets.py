"""Webhook signing secrets encrypted at rest, and the key's rotation (issue 17, section 3)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr, ValidationError

from tests.conftest import env_for, flowpay, override
from tests.helpers.db import Conn
from workers.api.merchants import create_merchant
from workers.core.config import SecretsSettings, Settings
from workers.core.db import connect
from workers.core.errors import ConfigError
from workers.core.sealing import Keyring, SealError, generate_key, key_id, keyring
from workers.notifier.endpoint_secrets import (
    check_keys,
    expire_secrets,
    open_secret,
    rotate,
    seal_secret,
    store_secret,
)
from workers.notifier.endpoints import NewEndpoint, register_endpoint

OLD, NEW = generate_key(), generate_key()


def ring(current: str, *previous: str) -> Keyring:
    return Keyring(base64.b64decode(current), [base64.b64decode(k) for k in previous])


# --- sealing, without I/O ----------------------------------------------------------------------


def test_a_sealed_secret_opens_only_with_its_key_and_for_its_endpoint() -> None:
    keys = ring(NEW)
    stored = seal_secret(keys, "we_1", "whsec_abc")
    assert b"whsec_abc" not in stored.blob
    assert stored.key_id == keys.current_id
    assert open_secret(keys, "we_1", stored.key_id, stored.blob) == "whsec_abc"
    with pytest.raises(SealError, match="altered"):  # moved to another endpoint's row
        open_secret(keys, "we_2", stored.key_id, stored.blob)
    tampered = bytearray(stored.blob)
    tampered[-1] ^= 1
    with pytest.raises(SealError, match="altered"):
        open_secret(keys, "we_1", stored.key_id, bytes(tampered))
    with pytest.raises(SealError, match=r"neither secrets\.key nor secrets\.previous_keys"):
        open_secret(ring(OLD), "we_1", stored.key_id, stored.blob)


def test_each_sealing_differs_and_a_previous_key_still_opens() -> None:
    old = ring(OLD)
    first, second = seal_secret(old, "we_1", "whsec_x"), seal_secret(old, "we_1", "whsec_x")
    assert first.blob != second.blob  # a fresh nonce each time
    rotated = ring(NEW, OLD)
    assert rotated.current_id != old.current_id
    assert open_secret(rotated, "we_1", first.key_id, first.blob) == "whsec_x"
    assert seal_secret(rotated, "we_1", "whsec_x").key_id == key_id(base64.b64decode(NEW))


@pytest.mark.parametrize(
    ("key", "complaint"),
    [("not base64!", "not base64"), ("c2hvcnQ=", "must decode to 32 bytes")],
)
def test_a_bad_key_is_refused_without_showing_it(key: str, complaint: str) -> None:
    with pytest.raises(ValidationError) as raised:
        SecretsSettings(key=SecretStr(key))
    assert complaint in str(raised.value)
    assert key not in str(raised.value)


def test_outside_the_dev_stack_no_key_is_a_clear_error(settings: Settings) -> None:
    without = override(settings, "secrets", key=None)
    assert not without.database.local
    with pytest.raises(ConfigError, match="FLOWPAY_SECRETS__KEY"):
        keyring(without)


# --- stored, rotated ---------------------------------------------------------------------------


def _endpoint(settings: Settings, db: Conn) -> NewEndpoint:
    merchant = create_merchant(db, "Sealed shop")
    url = "http://127.0.0.1:9/hooks"
    return register_endpoint(db, merchant.id, url, settings.notifier, keyring(settings))


def _all_stored(db: Conn, endpoint_id: str) -> list[tuple[str | None, bytes | None, str | None]]:
    rows = db.execute(
        "SELECT secret_key_id, secret_sealed, secret_plain FROM notifier.endpoint_secrets"
        " WHERE endpoint_id = %s ORDER BY id",
        (endpoint_id,),
    ).fetchall()
    return [(r[0], None if r[1] is None else bytes(r[1]), r[2]) for r in rows]


def _stored(db: Conn, endpoint_id: str) -> tuple[str | None, bytes | None, str | None]:
    (only,) = _all_stored(db, endpoint_id)
    return only


def test_a_new_secret_is_stored_sealed_never_in_plain_text(settings: Settings, db: Conn) -> None:
    endpoint = _endpoint(settings, db)
    key, sealed, plain = _stored(db, endpoint.id)
    assert plain is None
    assert sealed is not None
    assert endpoint.secret.encode() not in sealed
    assert key == keyring(settings).current_id


def test_rotate_reseals_under_the_new_key_and_seals_plain_text(
    settings: Settings, db: Conn
) -> None:
    endpoint = _endpoint(settings, db)
    # One stored before encryption (as notifier_0003 leaves them, notifier_0004 moves them).
    legacy = _endpoint(settings, db)
    db.execute(
        "UPDATE notifier.endpoint_secrets SET secret_plain = %s, secret_sealed = NULL,"
        " secret_key_id = NULL WHERE endpoint_id = %s",
        (legacy.secret, legacy.id),
    )
    # The endpoint's secret is being rotated: two sign meanwhile, both re-sealed.
    expire_secrets(db, endpoint.id, datetime.now(UTC) + timedelta(hours=1))
    store_secret(db, endpoint.id, seal_secret(keyring(settings), endpoint.id, "whsec_next"))
    assert settings.secrets.key is not None
    current = settings.secrets.key.get_secret_value()
    rotated = override(settings, "secrets", key=SecretStr(NEW), previous_keys=(SecretStr(current),))
    env = env_for(rotated) | {"FLOWPAY_SECRETS__PREVIOUS_KEYS": f'["{current}"]'}

    done = flowpay("secrets", "rotate", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert '"resealed": 3' in done.stdout
    new_keys = keyring(rotated)
    for ep, secrets in ((endpoint, [endpoint.secret, "whsec_next"]), (legacy, [legacy.secret])):
        stored = _all_stored(db, ep.id)
        assert [key for key, _, _ in stored] == [new_keys.current_id] * len(secrets)
        assert [plain for _, _, plain in stored] == [None] * len(secrets)
        # The old key can go.
        assert [open_secret(ring(NEW), ep.id, key, sealed) for key, sealed, _ in stored] == secrets
    again = flowpay("secrets", "rotate", "--json", env=env)
    assert '"resealed": 0' in again.stdout


def test_a_secret_under_a_key_no_longer_configured_is_named_not_lost(
    settings: Settings, db: Conn
) -> None:
    endpoint = _endpoint(settings, db)
    only_new = override(settings, "secrets", key=SecretStr(NEW), previous_keys=())
    with connect(only_new, "notifier") as conn:
        with pytest.raises(ConfigError, match=keyring(settings).current_id):
            check_keys(conn, keyring(only_new))
        with pytest.raises(ConfigError, match="previous_keys"):
            rotate(conn, keyring(only_new), lambda _n: None)
    assert _stored(db, endpoint.id)[0] == keyring(settings).current_id  # unchanged


def test_the_notifier_refuses_to_start_without_a_key(settings: Settings) -> None:
    env = env_for(settings)
    del env["FLOWPAY_SECRETS__KEY"]
    done = flowpay("run-notifier", env=env, timeout=60)
    assert done.returncode == 2
    assert "secrets.key is not set" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
