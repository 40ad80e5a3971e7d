"""How a Kafka client proves who it is: TLS, SASL credentials per role, and a check at start.

``workers.core.kafka`` puts ``security_config`` into every producer, consumer and admin client.
librdkafka retries a refused login for ever, logging as it goes, so a role with a wrong password
would look alive while doing nothing; ``verify_access`` turns that into one clear error before
the client is used.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from workers.core.config import KafkaPrincipal, KafkaRole, Settings
from workers.core.errors import ConfigError, KafkaAccessError

# Errors that no retry mends: the credentials, or the TLS set-up, are wrong.
_REFUSED = frozenset({KafkaError._AUTHENTICATION, KafkaError._SSL})
_PROBE_TIMEOUT_S = 10.0
# Fingerprints of client settings the brokers accepted in this process: checked once each.
_accepted: set[str] = set()


def credentials(settings: Settings, role: KafkaRole) -> KafkaPrincipal | None:
    """The role's own principal, else the shared one; None when neither is configured."""
    kafka = settings.kafka
    own = kafka.principals.get(role)
    if own is not None:
        return own
    if kafka.sasl_username is None or kafka.sasl_password is None:
        return None
    return KafkaPrincipal(username=kafka.sasl_username, password=kafka.sasl_password)


def security_config(settings: Settings, role: KafkaRole) -> dict[str, Any]:
    """The librdkafka properties of TLS and SASL for a client of ``role``."""
    kafka = settings.kafka
    config: dict[str, Any] = {"security.protocol": kafka.security_protocol}
    if kafka.uses_sasl:
        principal = credentials(settings, role)
        if principal is None:
            raise ConfigError(
                f"kafka: security_protocol {kafka.security_protocol} needs credentials for role "
                f"{role}: set kafka.principals.{role} or kafka.sasl_username/sasl_password"
            )
        config["sasl.mechanism"] = kafka.sasl_mechanism
        config["sasl.username"] = principal.username
        config["sasl.password"] = principal.password.get_secret_value()
    if kafka.uses_tls:
        files = {
            "ssl.ca.location": kafka.ssl_ca_location,
            "ssl.certificate.location": kafka.ssl_certificate_location,
            "ssl.key.location": kafka.ssl_key_location,
        }
        config.update({name: str(path) for name, path in files.items() if path is not None})
        if kafka.ssl_key_password is not None:
            config["ssl.key.password"] = kafka.ssl_key_password.get_secret_value()
    return config


def verify_access(config: dict[str, Any], role: str) -> None:
    """Raise KafkaAccessError if the brokers refuse these credentials or this TLS set-up.

    ``config`` is a client's connection settings. Returns as soon as the brokers answer; also
    when none can be reached (the client rides out an outage as it always has), so that only a
    refusal stops a role. A PLAINTEXT client has nothing to refuse and is not checked.
    """
    if config.get("security.protocol", "PLAINTEXT") == "PLAINTEXT":
        return
    fingerprint = _fingerprint(config)
    if fingerprint in _accepted:
        return
    errors: list[KafkaError] = []
    probe_config: dict[str, Any] = {
        **{k: v for k, v in config.items() if k not in ("logger", "error_cb")},
        "error_cb": errors.append,
        "log_level": 0,  # its complaints come back as the one error below
    }
    probe = AdminClient(probe_config)
    deadline = time.monotonic() + _PROBE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            probe.list_topics(timeout=0.5)
        except KafkaException:
            probe.poll(0)  # serves error_cb
            _raise_if_refused(errors, role, config)
            if any(e.code() == KafkaError._ALL_BROKERS_DOWN for e in errors):
                return
            continue
        _accepted.add(fingerprint)
        return


def _raise_if_refused(errors: list[KafkaError], role: str, config: dict[str, Any]) -> None:
    refusal = next((e for e in errors if e.code() in _REFUSED), None)
    if refusal is None:
        return
    who = f" (user {config['sasl.username']})" if "sasl.username" in config else ""
    raise KafkaAccessError(f"Kafka refused the {role} client{who}: {refusal.str()}")


def _fingerprint(config: dict[str, Any]) -> str:
    # A digest, so that the set of accepted settings holds no password.
    text = repr(sorted((k, str(v)) for k, v in config.items() if k not in ("logger", "error_cb")))
    return hashlib.sha256(text.encode()).hexdigest()
