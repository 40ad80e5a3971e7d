-- notifier 0001, the baseline: the notifier schema as schema.sql made it before migrations.
-- Every statement is idempotent, so that a database made by an earlier `flowpay db init` (which
-- applied schema.sql) adopts this history: what it lacks is added, what it holds is kept. Later
-- changes are new numbered migrations, never edits here.

CREATE SCHEMA IF NOT EXISTS notifier;

CREATE TABLE IF NOT EXISTS notifier.endpoints (
    id          text        PRIMARY KEY,
    merchant_id text        NOT NULL,
    url         text        NOT NULL CHECK (url ~ '^https?://'),
    secret      text        NOT NULL CHECK (secret LIKE 'whsec_%'),
    status      text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);
CREATE INDEX IF NOT EXISTS endpoints_by_merchant ON notifier.endpoints (merchant_id);

-- ---------------------------------------------------------------------------------------------
-- notifier: its view of each payment, one delivery per (event, endpoint), every attempt
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS notifier.payments (
    payment_id  text        PRIMARY KEY,
    merchant_id text        NOT NULL,
    object      jsonb       NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notifier.processed_events (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS notifier.deliveries (
    id              text        PRIMARY KEY,
    endpoint_id     text        NOT NULL REFERENCES notifier.endpoints (id),
    event_id        uuid        NOT NULL,
    merchant_id     text        NOT NULL,
    payment_id      text        NOT NULL,
    event_type      text        NOT NULL,
    body            bytea       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    leased_until    timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT deliveries_once_per_event_and_endpoint UNIQUE (event_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON notifier.deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_payment ON notifier.deliveries (payment_id);
-- Carried from the event to every attempt: its log lines name the correlation id, and its span
-- is a child of the event's (a W3C traceparent; NULL when tracing is off).
ALTER TABLE notifier.deliveries ADD COLUMN IF NOT EXISTS correlation_id text;
ALTER TABLE notifier.deliveries ADD COLUMN IF NOT EXISTS traceparent text;

CREATE TABLE IF NOT EXISTS notifier.attempts (
    id            bigserial   PRIMARY KEY,
    delivery_id   text        NOT NULL REFERENCES notifier.deliveries (id),
    attempt       integer     NOT NULL,
    started_at    timestamptz NOT NULL,
    duration_ms   integer     NOT NULL,
    status_code   integer,
    error         text,
    response_head text
);
CREATE INDEX IF NOT EXISTS attempts_by_delivery ON notifier.attempts (delivery_id, id);
