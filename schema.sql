-- FlowPay's whole schema. One PostgreSQL schema per service; every statement is idempotent,
-- so `flowpay db init` can run any number of times. Money is bigint minor units, never a float.

CREATE SCHEMA IF NOT EXISTS api;
CREATE SCHEMA IF NOT EXISTS processor;
CREATE SCHEMA IF NOT EXISTS ledger;
CREATE SCHEMA IF NOT EXISTS notifier;

-- ---------------------------------------------------------------------------------------------
-- api: merchants and their keys, payment intents, idempotency records, the read model, outbox
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS api.merchants (
    id          text        PRIMARY KEY CHECK (id ~ '^mer_[A-Za-z0-9]+$'),
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored only as SHA-256 hashes; the key itself is shown once at creation.
CREATE TABLE IF NOT EXISTS api.api_keys (
    id          text        PRIMARY KEY,
    merchant_id text        NOT NULL REFERENCES api.merchants (id),
    key_hash    bytea       NOT NULL CONSTRAINT api_keys_hash_unique UNIQUE,
    key_prefix  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE TABLE IF NOT EXISTS api.payments (
    id              text        PRIMARY KEY,
    merchant_id     text        NOT NULL REFERENCES api.merchants (id),
    amount          bigint      NOT NULL CONSTRAINT payments_amount_range
                                CHECK (amount > 0 AND amount <= 1000000000000),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    payment_method  text        NOT NULL CHECK (length(payment_method) BETWEEN 1 AND 255),
    description     text        CHECK (length(description) <= 1000),
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status          text        NOT NULL DEFAULT 'initiated' CONSTRAINT payments_status_known
                                CHECK (status IN ('initiated', 'processing', 'succeeded', 'failed', 'refunded')),
    refunded_amount bigint      NOT NULL DEFAULT 0 CONSTRAINT payments_refunded_range
                                CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    failure_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payments_by_merchant ON api.payments (merchant_id, created_at DESC, id DESC);

CREATE TABLE IF NOT EXISTS api.refunds (
    id          text        PRIMARY KEY,
    payment_id  text        NOT NULL REFERENCES api.payments (id),
    amount      bigint      NOT NULL CHECK (amount > 0 AND amount <= 1000000000000),
    reason      text        CHECK (length(reason) <= 1000),
    status      text        NOT NULL DEFAULT 'requested'
                            CHECK (status IN ('requested', 'succeeded', 'failed')),
    failure_reason text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS refunds_by_payment ON api.refunds (payment_id);

-- One row per (merchant, Idempotency-Key). response_status NULL means "still in flight".
CREATE TABLE IF NOT EXISTS api.idempotency_keys (
    merchant_id     text        NOT NULL REFERENCES api.merchants (id),
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response_status integer,
    response_body   bytea,
    response_location text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (merchant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON api.idempotency_keys (created_at);

-- Events waiting for the relay. Written in the same transaction as the change they describe;
-- every service that emits events has one of these, of the same shape, in its own schema.
CREATE TABLE IF NOT EXISTS api.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL CONSTRAINT api_outbox_event_unique UNIQUE,
    message_key  bytea       NOT NULL,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS api_outbox_unpublished ON api.outbox (id) WHERE published_at IS NULL;

-- Events the read model has applied: a clash on the key means "already done".
CREATE TABLE IF NOT EXISTS api.processed_events (
    event_id     uuid        PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------------------------
-- processor: the payment state machine's own record, refunds, and every gateway attempt
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS processor.payments (
    payment_id      text        PRIMARY KEY,
    merchant_id     text        NOT NULL,
    amount          bigint      NOT NULL CHECK (amount > 0 AND amount <= 1000000000000),
    currency        text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    payment_method  text        NOT NULL,
    correlation_id  text        NOT NULL,
    state           text        NOT NULL CONSTRAINT processor_payments_state_known
                                CHECK (state IN ('initiated', 'processing', 'succeeded', 'failed', 'refunded')),
    charge_id       text,
    failure_reason  text,
    refunded_amount bigint      NOT NULL DEFAULT 0 CONSTRAINT processor_payments_refund_range
                                CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    -- Non-null: the reconciler owns this payment (unknown outcome, or a watch for a late charge).
    next_check_at   timestamptz,
    checks          integer     NOT NULL DEFAULT 0,
    reversed_charge_id text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT processor_payments_charged_when_succeeded
        CHECK (state NOT IN ('succeeded', 'refunded') OR charge_id IS NOT NULL),
    CONSTRAINT processor_payments_fully_refunded
        CHECK (state <> 'refunded' OR refunded_amount = amount)
);
CREATE INDEX IF NOT EXISTS processor_payments_due ON processor.payments (next_check_at)
    WHERE next_check_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS processor.refunds (
    refund_id         text        PRIMARY KEY,
    -- No foreign key: a refund request for a payment never seen is still answered (refused).
    payment_id        text        NOT NULL,
    amount            bigint      NOT NULL CHECK (amount > 0 AND amount <= 1000000000000),
    status            text        NOT NULL CHECK (status IN ('requested', 'succeeded', 'failed')),
    gateway_refund_id text,
    failure_reason    text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS processor_refunds_by_payment ON processor.refunds (payment_id);

CREATE TABLE IF NOT EXISTS processor.attempts (
    id          bigserial   PRIMARY KEY,
    payment_id  text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('charge', 'lookup', 'refund', 'reversal')),
    outcome     text        NOT NULL,
    detail      text,
    duration_ms integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS processor_attempts_by_payment ON processor.attempts (payment_id, id);

-- ---------------------------------------------------------------------------------------------
-- outboxes: the relay is woken by NOTIFY on insert (channel flowpay_outbox, payload = schema)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS processor.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL CONSTRAINT processor_outbox_event_unique UNIQUE,
    message_key  bytea       NOT NULL,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS processor_outbox_unpublished ON processor.outbox (id) WHERE published_at IS NULL;

CREATE OR REPLACE FUNCTION api.notify_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowpay_outbox', TG_TABLE_SCHEMA);
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER api_outbox_notify AFTER INSERT ON api.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION api.notify_outbox();
CREATE OR REPLACE TRIGGER processor_outbox_notify AFTER INSERT ON processor.outbox
    FOR EACH STATEMENT EXECUTE FUNCTION api.notify_outbox();

-- ---------------------------------------------------------------------------------------------
-- notifier: merchants' webhook endpoints (Standard Webhooks secrets, whsec_...)
-- ---------------------------------------------------------------------------------------------

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
