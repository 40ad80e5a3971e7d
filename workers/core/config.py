"""Configuration: defaults < flowpay.toml < FLOWPAY_* environment variables.

The TOML file comes from ``--config``, else ``FLOWPAY_CONFIG``, else ``./flowpay.toml`` when it
exists. Nested keys use ``__`` in the environment: ``FLOWPAY_KAFKA__PARTITIONS=12``.
Every key and its default is documented in ``flowpay.toml.example``.
"""

from __future__ import annotations

import base64
import os
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from workers.core.errors import ConfigError
from workers.core.logs import LogFormat

DEFAULT_CONFIG_FILE = Path("flowpay.toml")
AES_KEY_BYTES = 32
_toml_path: ContextVar[Path | None] = ContextVar("flowpay_toml_path", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# The roles FlowPay's processes act as. Each service has a PostgreSQL role and a Kafka principal
# of its own, so that what it may do is enforced by the servers (``workers.core.db_roles``,
# ``workers.core.kafka_acls``). The operator is the CLI's tools (topics, dead letters, replay's
# reading, merchants, webhooks, status, ledger check).
ServiceRole = Literal[
    "api", "outbox", "processor", "ledger", "notifier", "orchestrator", "operator"
]
SERVICE_ROLES: tuple[ServiceRole, ...] = get_args(ServiceRole)
# PostgreSQL's roles also have an owner: it owns every schema and runs the migrations.
DatabaseRole = Literal[ServiceRole, "owner"]
DATABASE_ROLES: tuple[DatabaseRole, ...] = (*SERVICE_ROLES, "owner")


def _libpq_reads(url: SecretStr) -> SecretStr:
    # Refused here, once, in words of our own: libpq's complaint quotes the string, so a role or
    # command meeting it later would print part of the password.
    try:
        conninfo_to_dict(url.get_secret_value())
    except psycopg.ProgrammingError:
        raise ValueError("not a PostgreSQL URL or key=value connection string") from None
    return url


class DatabaseSettings(_Section):
    # The URL of every role without one of its own in ``urls`` (one URL for development).
    # None, with no ``urls`` either, means the dev stack's private PostgreSQL cluster, where each
    # role logs in as itself.
    url: SecretStr | None = None
    # Each role's own URL (libpq URLs or key=value strings, multi-host ones included).
    urls: dict[DatabaseRole, SecretStr] = {}
    # Who `flowpay db init` connects as to create the roles: a superuser, or a role with
    # CREATEROLE. None means ``url``.
    admin_url: SecretStr | None = None
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)

    @field_validator("url", "admin_url")
    @classmethod
    def _libpq_reads_it(cls, url: SecretStr | None) -> SecretStr | None:
        return None if url is None else _libpq_reads(url)

    @field_validator("urls")
    @classmethod
    def _libpq_reads_them(
        cls, urls: dict[DatabaseRole, SecretStr]
    ) -> dict[DatabaseRole, SecretStr]:
        return {role: _libpq_reads(url) for role, url in urls.items()}

    @property
    def local(self) -> bool:
        """True when FlowPay uses the dev stack's own PostgreSQL cluster."""
        return self.url is None and not self.urls and self.admin_url is None


# Who a Kafka client authenticates as: each role may have a principal of its own, so that the
# brokers' ACLs give it only what it needs (``flowpay kafka acls``). The operator is the CLI's
# admin tools (topics, dead-letter replay, ledger replay).
KafkaRole = ServiceRole
KAFKA_ROLES: tuple[KafkaRole, ...] = SERVICE_ROLES

# librdkafka properties FlowPay sets from its own settings (or that its guarantees rest on):
# ``client_properties`` may not set them, so each has one source and secrets stay SecretStr.
RESERVED_CLIENT_PROPERTIES = frozenset(
    {
        "bootstrap.servers", "client.id", "group.id", "security.protocol", "sasl.mechanism",
        "sasl.mechanisms", "sasl.username", "sasl.password", "ssl.ca.location",
        "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
        "enable.auto.commit", "enable.auto.offset.store", "isolation.level",
        "enable.idempotence", "acks", "session.timeout.ms", "logger", "error_cb",
    }
)  # fmt: skip

ClientProperty = str | int | float | bool


class KafkaPrincipal(_Section):
    """One role's own SASL credentials."""

    username: str = Field(min_length=1)
    password: SecretStr


class KafkaSettings(_Section):
    # None means "the dev stack's broker".
    bootstrap_servers: str | None = None
    topic_prefix: str = Field(default="flowpay", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    partitions: int = Field(default=6, ge=1, le=10_000)
    client_id: str = "flowpay"
    # How long a consumer that stopped answering (killed, hung) keeps its partitions.
    session_timeout_ms: int = Field(default=45_000, ge=6_000, le=300_000)
    # Copies of each partition `flowpay topics create` asks for: 1 on the local broker, 3 on a
    # cluster. None leaves it to the brokers' default.replication.factor.
    replication_factor: int | None = Field(default=None, ge=1, le=32)
    # The topics' min.insync.replicas: replicas that must hold a write before an acks=all
    # producer (FlowPay's) is answered; 2 with 3 replicas. None: the brokers' default.
    min_insync_replicas: int | None = Field(default=None, ge=1, le=32)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    # The principal of every role that has none of its own under [kafka.principals.<role>].
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # PEM files: the CA that signed the brokers' certificates (None: the system's CAs), and a
    # client certificate and key for brokers that want one (mutual TLS).
    ssl_ca_location: Path | None = None
    ssl_certificate_location: Path | None = None
    ssl_key_location: Path | None = None
    ssl_key_password: SecretStr | None = None
    # Any other librdkafka property, for every producer, consumer and admin client.
    client_properties: dict[str, ClientProperty] = {}
    principals: dict[KafkaRole, KafkaPrincipal] = {}
    # Who `flowpay kafka acls apply` connects as: a cluster administrator, which may alter ACLs
    # (the operator's own principal may not create the first ones). None: the operator's.
    admin: KafkaPrincipal | None = None

    @field_validator("client_properties", mode="before")
    @classmethod
    def _dotted(cls, value: object) -> object:
        # TOML reads `socket.keepalive.enable = true` as nested tables: join them back.
        return _flatten(value) if isinstance(value, dict) else value

    @field_validator("client_properties")
    @classmethod
    def _not_reserved(cls, value: dict[str, ClientProperty]) -> dict[str, ClientProperty]:
        taken = sorted(RESERVED_CLIENT_PROPERTIES.intersection(value))
        if taken:
            raise ValueError(
                f"{', '.join(taken)}: FlowPay sets these itself (see the [kafka] keys)"
            )
        return value

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> KafkaSettings:
        rf, isr = self.replication_factor, self.min_insync_replicas
        if rf is not None and isr is not None and isr > rf:
            # Kafka caps it at the replica count: less durability than asked for, silently.
            raise ValueError("min_insync_replicas cannot exceed replication_factor")
        return self

    @model_validator(mode="after")
    def _shared_credentials_whole(self) -> KafkaSettings:
        if (self.sasl_username is None) != (self.sasl_password is None):
            raise ValueError("sasl_username and sasl_password go together")
        return self

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol.endswith("SSL")


def _flatten(table: dict[str, object], prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class ApiSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # Server processes: one per core of the 2-core machines FlowPay is measured on (the intake
    # is bound by Python's CPU per request; a second process took ~280 -> ~400 accepted/s).
    workers: int = Field(default=2, ge=1, le=64)
    # What clients (``flowpay pay``) use; None means http://<host>:<port>.
    base_url: str | None = None
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    max_body_bytes: int = Field(default=65536, ge=1024)
    # Keep the payment status view current from the event log inside serve-api.
    # How long a server process trusts a valid API key without asking the database again:
    # a revoked key keeps working this long at most.
    key_cache_s: float = Field(default=2.0, ge=0, le=300)
    read_model: bool = True
    # Seconds between keep-alive comments on an idle event stream, so proxies keep it open.
    stream_heartbeat_s: float = Field(default=15.0, gt=0, le=300)
    # Each API key's token bucket, over all server processes (Stripe's defaults): it refills
    # at rate_limit_per_s requests a second and holds rate_limit_burst at most.
    rate_limit_per_s: float = Field(default=100.0, gt=0)
    rate_limit_burst: int = Field(default=200, ge=1)
    # Event streams one API key may hold open at once, over all server processes.
    max_streams_per_key: int = Field(default=100, ge=1, le=65_535)
    # Webhook endpoints a merchant may have at once (each takes a share of the notifier's
    # connections and attempts in flight); deleted ones do not count.
    max_webhook_endpoints: int = Field(default=16, ge=1, le=1000)
    # How long GET /v1/events keeps each event of a merchant's payments.
    events_retention_days: int = Field(default=30, ge=1, le=3650)


class WorkerSettings(_Section):
    batch_size: int = Field(default=500, ge=1, le=100_000)
    # The consumer engine polls for at most 0.5 s at a time, so that it notices a stop.
    poll_timeout_s: float = Field(default=0.5, gt=0)
    grace_period_s: float = Field(default=10.0, ge=0)
    # Unexpected handler errors are retried this often before the message is dead-lettered.
    max_attempts: int = Field(default=5, ge=1)
    retry_max_backoff_s: float = Field(default=30.0, gt=0)


class OutboxSettings(_Section):
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    # The longest an idle relay waits between polls (it polls again at once while rows wait,
    # then after 2 ms, doubling up to this): the most an event waits after a quiet spell.
    poll_interval_s: float = Field(default=0.1, gt=0)
    # How long the relay waits for Kafka to acknowledge a batch before backing off.
    delivery_timeout_s: float = Field(default=30.0, gt=0)
    # Published rows are kept this long (for audits), then pruned.
    retention_hours: float = Field(default=24.0, ge=0)
    prune_interval_s: float = Field(default=300.0, gt=0)


STRIPE_API: Final = "https://api.stripe.com"
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


class StripeSettings(_Section):
    """Stripe, when ``gateway.provider = "stripe"``: the official SDK's client and webhooks."""

    # A secret key (sk_test_..., sk_live_...) or a restricted one (rk_...); never logged.
    api_key: SecretStr | None = None
    # Stripe's API; stripe-mock's address in tests. Plain http only to this machine.
    base_url: str = STRIPE_API
    # One attempt's deadline, answer included; past it the outcome is unknown and looked up.
    timeout_s: float = Field(default=30.0, gt=0, le=300)
    # The signing secret (whsec_...) of the endpoint registered in Stripe's dashboard.
    webhook_secret: SecretStr | None = None
    # Where Stripe sends a customer back after authenticating (3-D Secure) on its page: sent on
    # every confirmation, as Stripe requires for a payment that may need a redirect.
    return_url: str | None = Field(default=None, max_length=2048)

    @field_validator("api_key")
    @classmethod
    def _a_secret_key(cls, key: SecretStr | None) -> SecretStr | None:
        # A publishable key (pk_) in its place would be sent to Stripe and refused on every call.
        if key is not None and not key.get_secret_value().startswith(("sk_", "rk_")):
            raise ValueError("not a Stripe secret key (sk_...) or restricted key (rk_...)")
        return key

    @field_validator("webhook_secret")
    @classmethod
    def _a_signing_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not secret.get_secret_value().startswith("whsec_"):
            raise ValueError("not a webhook signing secret (whsec_...)")
        return secret

    @field_validator("base_url")
    @classmethod
    def _keys_never_in_the_clear(cls, url: str) -> str:
        # The secret key travels in every request's Authorization header.
        return _https_or_loopback(url).rstrip("/")

    @field_validator("return_url")
    @classmethod
    def _customers_come_back_safely(cls, url: str | None) -> str | None:
        # The customer's browser lands there from their bank's page: never in the clear.
        return None if url is None else _https_or_loopback(url)


def _https_or_loopback(url: str) -> str:
    parsed = urlsplit(url)
    local = parsed.scheme == "http" and parsed.hostname in _LOOPBACK_HOSTS
    if not (parsed.scheme == "https" or local) or not parsed.hostname:
        raise ValueError("must be https (plain http only to 127.0.0.1 or localhost)")
    return url


class GatewaySettings(_Section):
    # Which gateway the processor charges: the simulator (the local stack, the bench, chaos)
    # or Stripe ([gateway.stripe]).
    provider: Literal["simulator", "stripe"] = "simulator"
    # None means the dev stack's gateway simulator (http://<gateway_sim.host>:<gateway_sim.port>).
    url: str | None = None
    # Bearer token sent to the gateway, if it wants one.
    api_key: SecretStr | None = None
    timeout_s: float = Field(default=5.0, gt=0)
    # Retries of one call on timeouts, lost connections and 5xx, with jittered exponential backoff.
    max_retries: int = Field(default=3, ge=0, le=20)
    backoff_base_s: float = Field(default=0.2, gt=0)
    backoff_max_s: float = Field(default=5.0, gt=0)
    # HTTP connections to the gateway at most.
    max_connections: int = Field(default=256, ge=1)
    stripe: StripeSettings = StripeSettings()

    @model_validator(mode="after")
    def _stripe_has_a_key(self) -> GatewaySettings:
        if self.provider == "stripe" and self.stripe.api_key is None:
            raise ValueError("provider stripe needs gateway.stripe.api_key")
        return self


class GatewaySimSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8100, ge=1, le=65535)
    # SQLite file of the simulator's charges and refunds; None means <dev.home>/gateway-sim.sqlite3.
    db_path: Path | None = None
    # How long a "timeout" fault holds a request before it (late) performs the charge.
    timeout_hold_s: float = Field(default=30.0, ge=0)


class ProcessorSettings(_Section):
    max_in_flight: int = Field(default=256, ge=1, le=10_000)
    # How often the reconciler looks for payments whose outcome is unknown.
    reconcile_interval_s: float = Field(default=5.0, gt=0)
    # Re-checks of an unknown outcome back off from the first delay to the last, doubling.
    recheck_first_s: float = Field(default=60.0, gt=0)
    recheck_max_s: float = Field(default=3600.0, gt=0)
    # With no charge found this long after the first attempt, the payment fails (gateway_timeout).
    unknown_deadline_s: float = Field(default=86_400.0, gt=0)
    # A failed payment is watched this long after its failure for a charge that lands late
    # (then reversed). Once named reversal_window_s, which is still read.
    late_charge_window_s: float = Field(default=86_400.0, gt=0)
    # A payment waiting for its customer (3-D Secure) is given up this long after it began to
    # wait: its charge is canceled at the gateway and it fails with action_expired. Stripe
    # never expires a PaymentIntent itself (it stays requires_action until canceled); its
    # Checkout gives a session a day, which is the default here.
    requires_action_timeout_s: float = Field(default=86_400.0, gt=0)
    # A charge the gateway holds as processing (async payment methods), or a payout in transit
    # (Stripe pays days later), is looked up this many times on the re-check schedule, then left
    # to the gateway's webhook: never asked forever.
    pending_max_checks: int = Field(default=8, ge=0, le=64)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        if isinstance(data, dict) and "reversal_window_s" in data:
            if "late_charge_window_s" in data:
                raise ValueError(
                    "reversal_window_s is the old name of late_charge_window_s: set only the latter"
                )
            data = {k: v for k, v in data.items() if k != "reversal_window_s"} | {
                "late_charge_window_s": data["reversal_window_s"]
            }
        return data


class NotifierSettings(_Section):
    # Seconds before each attempt after the first (Svix's schedule: now, 5 s, 5 min, 30 min,
    # 2 h, 5 h, 10 h, 10 h); the delivery fails after the last. Tests compress it.
    schedule_s: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
    # Each delay is stretched or shrunk by up to this fraction, so retries do not stampede.
    jitter: float = Field(default=0.1, ge=0, lt=1)
    # One deadline for a whole attempt (connect, send, answer): an endpoint that drips its
    # answer byte by byte is cut off here however often it sends a byte.
    attempt_deadline_s: float = Field(default=15.0, gt=0)
    # How long a claimed delivery stays this sender's: a sender that dies lets it lapse and the
    # delivery goes again. Longer than the deadline, so that a live attempt is never sent twice.
    lease_s: float = Field(default=30.0, gt=0)
    max_concurrent: int = Field(default=256, ge=1, le=10_000)
    # Attempts in flight to one endpoint at most, over every notifier process: a slow endpoint
    # holds this many of max_concurrent, never all of them (it takes 16 hanging endpoints to
    # fill a sender). An endpoint's throughput is this over the time from a claim to the
    # attempt's record (answer plus a commit round): at 4, one merchant's single endpoint took
    # no more than about 100 webhooks a second however fast it answered.
    max_in_flight_per_endpoint: int = Field(default=16, ge=1, le=10_000)
    poll_interval_s: float = Field(default=0.5, gt=0)
    # A Retry-After longer than this is cut to it.
    max_retry_after_s: float = Field(default=3600.0, gt=0)
    # An endpoint whose every attempt failed for this long is disabled (as Svix: 5 days).
    disable_after_s: float = Field(default=432_000.0, gt=0)
    # Off in production: endpoints must be https, and must not reach inside the network
    # (loopback, private, link-local, CGNAT, multicast, ...). The local stack and the tests
    # turn both on for their own receivers on 127.0.0.1.
    allow_insecure_http: bool = False
    allow_private_targets: bool = False

    @model_validator(mode="after")
    def _deadline_within_lease(self) -> NotifierSettings:
        if self.attempt_deadline_s >= self.lease_s:
            # The lease would lapse mid-attempt and a second sender send it again meanwhile.
            raise ValueError("attempt_deadline_s must be shorter than lease_s")
        return self


class OrchestratorSettings(_Section):
    # An authorization not captured this long after it was made is voided (the payment is
    # canceled, cancellation_reason "expired"): 7 days, as card networks hold it.
    authorization_ttl_s: float = Field(default=604_800.0, gt=0)
    # A step whose command has had no answer this long sends it again (same idempotency keys
    # at the gateway, so never twice in effect), and again after each further such wait.
    command_timeout_s: float = Field(default=900.0, gt=0)
    # How often the timer loop looks for due timers when none was due last time.
    timer_interval_s: float = Field(default=1.0, gt=0)
    # Due timers claimed (FOR UPDATE SKIP LOCKED) and fired in one transaction at most.
    timer_batch_size: int = Field(default=500, ge=1, le=100_000)


class MetricsSettings(_Section):
    # Each role serves Prometheus metrics at http://<host>:<port>/metrics; a port of 0 turns
    # that role's off, and enabled = false turns them all off.
    enabled: bool = True
    host: str = "127.0.0.1"
    # serve-api's port is served by its parent process, over all its server processes.
    api_port: int = Field(default=9101, ge=0, le=65535)
    outbox_port: int = Field(default=9102, ge=0, le=65535)
    processor_port: int = Field(default=9103, ge=0, le=65535)
    ledger_port: int = Field(default=9104, ge=0, le=65535)
    notifier_port: int = Field(default=9105, ge=0, le=65535)
    # `flowpay replay` serves its progress here while it runs.
    replay_port: int = Field(default=9106, ge=0, le=65535)
    orchestrator_port: int = Field(default=9107, ge=0, le=65535)


class TracingSettings(_Section):
    # none: no spans at all; otlp: OTLP over HTTP to otlp_endpoint; file: each process writes
    # its spans as JSON lines under file_dir (for debugging and tests).
    exporter: Literal["none", "otlp", "file"] = "none"
    otlp_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    # None means <dev.home>/traces.
    file_dir: Path | None = None


class SecretsSettings(_Section):
    # The AES-256-GCM key that secrets stored in the database (webhook signing secrets) are
    # encrypted with: base64 of 32 random bytes (`flowpay secrets generate-key`). None means the
    # dev stack's own key (<dev.home>/credentials/secrets.key), and only with the dev stack's
    # PostgreSQL: elsewhere a role that needs a key refuses to start without one.
    key: SecretStr | None = None
    # Earlier keys, used only to decrypt what `flowpay secrets rotate` has not yet re-encrypted.
    previous_keys: tuple[SecretStr, ...] = ()

    @field_validator("key")
    @classmethod
    def _key_is_a_key(cls, key: SecretStr | None) -> SecretStr | None:
        return None if key is None else _aes_key(key)

    @field_validator("previous_keys")
    @classmethod
    def _keys_are_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        return tuple(_aes_key(key) for key in keys)


def _aes_key(key: SecretStr) -> SecretStr:
    # Says what is wrong without the value: the input is a secret.
    try:
        raw = base64.b64decode(key.get_secret_value().strip(), validate=True)
    except ValueError:
        raise ValueError("not base64 (make one with `flowpay secrets generate-key`)") from None
    if len(raw) != AES_KEY_BYTES:
        raise ValueError(f"must decode to {AES_KEY_BYTES} bytes (AES-256), not {len(raw)}")
    return key


class DevSettings(_Section):
    home: Path = Path(".flowpay")
    pg_port: int = Field(default=55432, ge=1, le=65535)
    kafka_port: int = Field(default=59092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=59093, ge=1, le=65535)
    kafka_version: str = Field(default="4.1.1", pattern=r"^\d+\.\d+\.\d+$")
    # An existing Kafka distribution (its libs/ is used); KAFKA_HOME is honoured too.
    kafka_home: Path | None = None
    kafka_heap: str = Field(default="512m", pattern=r"^\d+[mg]$")
    # The demo's local webhook receiver.
    sink_port: int = Field(default=8200, ge=1, le=65535)
    start_timeout_s: float = Field(default=90.0, gt=0)
    # Kafka nodes, each a broker and a KRaft controller: 1, or 3 or more for a quorum and
    # topics that outlive a broker (`flowpay dev up --brokers 3`). Node n listens on
    # kafka_port + 2(n - 1), its controller on kafka_controller_port + 2(n - 1).
    kafka_brokers: int = Field(default=1, ge=1, le=9)
    # A synchronous streaming standby of PostgreSQL, failed over by pg_auto_failover
    # (`flowpay dev up --pg-standby`): the standby listens on pg_port + 1, the monitor on
    # pg_port + 2.
    pg_standby: bool = False

    @field_validator("kafka_brokers")
    @classmethod
    def _a_quorum_that_tolerates_a_loss(cls, brokers: int) -> int:
        if brokers == 2:
            # Two voters need both for a majority: losing either stops the cluster.
            raise ValueError("2 brokers survive no loss: use 1, or 3 or more")
        return brokers

    @model_validator(mode="after")
    def _ports_apart(self) -> DevSettings:
        kafka = [*self.kafka_ports, *self.kafka_controller_ports]
        if len(set(kafka)) != len(kafka) or max(kafka) > 65535:
            raise ValueError(
                "the Kafka nodes' ports (kafka_port and kafka_controller_port, each + 2 per "
                "further node) overlap or pass 65535"
            )
        postgres = [*self.pg_ports, self.pg_monitor_port] if self.pg_standby else [self.pg_port]
        if set(postgres) & set(kafka) or max(postgres) > 65535:
            raise ValueError("pg_port (+ 1 and + 2 with pg_standby) overlaps a Kafka port")
        return self

    @property
    def kafka_ports(self) -> tuple[int, ...]:
        """Each Kafka node's client port, node 1 first."""
        return tuple(self.kafka_port + 2 * n for n in range(self.kafka_brokers))

    @property
    def kafka_controller_ports(self) -> tuple[int, ...]:
        return tuple(self.kafka_controller_port + 2 * n for n in range(self.kafka_brokers))

    @property
    def pg_ports(self) -> tuple[int, ...]:
        """Every PostgreSQL server's port, the one first made primary first."""
        return (self.pg_port, self.pg_port + 1) if self.pg_standby else (self.pg_port,)

    @property
    def pg_monitor_port(self) -> int:
        return self.pg_port + 2

    @property
    def credentials(self) -> Path:
        """The owner-only directory of the dev stack's generated passwords and keys."""
        return self.home.resolve() / "credentials"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLOWPAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    # auto: text on a terminal, JSON lines otherwise.
    log_format: LogFormat = "auto"
    database: DatabaseSettings = DatabaseSettings()
    kafka: KafkaSettings = KafkaSettings()
    api: ApiSettings = ApiSettings()
    worker: WorkerSettings = WorkerSettings()
    outbox: OutboxSettings = OutboxSettings()
    gateway: GatewaySettings = GatewaySettings()
    gateway_sim: GatewaySimSettings = GatewaySimSettings()
    processor: ProcessorSettings = ProcessorSettings()
    notifier: NotifierSettings = NotifierSettings()
    orchestrator: OrchestratorSettings = OrchestratorSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    secrets: SecretsSettings = SecretsSettings()
    dev: DevSettings = DevSettings()

    @model_validator(mode="after")
    def _stripe_remembers_keys_a_day(self) -> Settings:
        # The reconciler sends a charge again with its key until unknown_deadline_s: Stripe
        # keeps idempotency keys for 24 hours, so past that a re-send could charge twice.
        if self.gateway.provider == "stripe" and self.processor.unknown_deadline_s > 86_400:
            raise ValueError(
                "processor.unknown_deadline_s above 86400 with Stripe (keys last a day)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _toml_path.get()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


def config_path(explicit: Path | None = None) -> Path | None:
    """The TOML file to read, or None when there is none to read."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get("FLOWPAY_CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def load_settings(path: Path | None = None) -> Settings:
    """Settings from every source; a bad value raises ConfigError naming the key."""
    chosen = config_path(path)
    if chosen is not None and not chosen.is_file():
        raise ConfigError(f"config file {chosen} does not exist")
    token = _toml_path.set(chosen)
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"config file {chosen}: {exc}") from None
    finally:
        _toml_path.reset(token)


def _describe(exc: ValidationError) -> str:
    # Only the key and the reason: the offending input may be a secret.
    first = exc.errors(include_input=False, include_url=False)[0]
    key = ".".join(str(part) for part in first["loc"]) or "(root)"
    more = exc.error_count() - 1
    tail = f" (and {more} more)" if more else ""
    return f"config: {key}: {first['msg']}{tail}"
