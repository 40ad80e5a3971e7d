"""The local stack's demo merchant, so `flowpay pay` works right after `flowpay dev up`.

Its API key is kept in ``<dev.home>/demo-merchant.json`` (mode 0600), on this machine only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from workers.api.merchants import create_merchant, merchant_exists
from workers.core.config import Settings
from workers.core.db import connect
from workers.core.errors import ConfigError
from workers.core.sealing import keyring
from workers.devstack.paths import StackPaths
from workers.devstack.sink import sink_url
from workers.notifier.endpoints import register_endpoint

DEMO_NAME = "Demo merchant"
# The local stack's webhook receiver (`flowpay dev sink`) is on 127.0.0.1 over http: the stack's
# roles run with both URL rules lifted, and the demo's endpoint is registered so.
LOCAL_RECEIVER_ENV = {
    "FLOWPAY_NOTIFIER__ALLOW_INSECURE_HTTP": "true",
    "FLOWPAY_NOTIFIER__ALLOW_PRIVATE_TARGETS": "true",
}


def key_file(settings: Settings) -> Path:
    return StackPaths.of(settings).home / "demo-merchant.json"


def demo_api_key(settings: Settings) -> str:
    try:
        return str(json.loads(key_file(settings).read_text())["api_key"])
    except (OSError, ValueError, KeyError):
        raise ConfigError(
            "no API key: pass --api-key, set FLOWPAY_API_KEY, or run 'flowpay dev up'"
        ) from None


def demo_webhook_secret(settings: Settings) -> str:
    try:
        return str(json.loads(key_file(settings).read_text())["webhook_secret"])
    except (OSError, ValueError, KeyError):
        return ""


def ensure_demo_merchant(settings: Settings) -> str:
    """The demo merchant's id, creating it (its key, its webhook endpoint) the first time."""
    path = key_file(settings)
    with connect(settings, "operator") as conn:
        if path.exists():
            merchant_id = str(json.loads(path.read_text())["merchant_id"])
            if merchant_exists(conn, merchant_id):
                return merchant_id
        merchant = create_merchant(conn, DEMO_NAME)
        local = settings.notifier.model_copy(
            update={"allow_insecure_http": True, "allow_private_targets": True}
        )
        endpoint = register_endpoint(
            conn, merchant.id, sink_url(settings), local, keyring(settings)
        )
    demo = {
        "merchant_id": merchant.id,
        "api_key": merchant.api_key,
        "webhook_secret": endpoint.secret,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(demo, out)
    return merchant.id
