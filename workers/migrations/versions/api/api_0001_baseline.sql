-- api 0001, the baseline: the api schema as schema.sql made it before migrations.
-- Every statement is idempotent, so that a database made by an earlier `flowpay db init` (which
-- applied schema.sql) adopts this history: what it lacks is added, what it holds is kept. Later
-- changes are new numbered migrations, never edits here.

CREATE SCHEMA IF NOT EXISTS api;

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

-- Each payment's status changes, numbered, for GET /v1/payments/<id>/events and its
-- Last-Event-ID resume. Version 1 is the payment as created and has no row here (the intake
-- stays one INSERT); every later change of what the API shows gets the next version, and a
-- NOTIFY on channel flowpay_payment_changes (payload = payment id) wakes the streams.
ALTER TABLE api.payments ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
CREATE TABLE IF NOT EXISTS api.payment_changes (
    payment_id      text        NOT NULL REFERENCES api.payments (id),
    version         integer     NOT NULL CHECK (version > 1),
    status          text        NOT NULL,
    refunded_amount bigint      NOT NULL,
    failure_reason  text,
    changed_at      timestamptz NOT NULL,
    CONSTRAINT payment_changes_pkey PRIMARY KEY (payment_id, version)
);

CREATE OR REPLACE FUNCTION api.record_payment_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    INSERT INTO api.payment_changes
        (payment_id, version, status, refunded_amount, failure_reason, changed_at)
    VALUES (NEW.id, NEW.version, NEW.status, NEW.refunded_amount, NEW.failure_reason, NEW.updated_at);
    PERFORM pg_notify('flowpay_payment_changes', NEW.id);
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER payments_record_change BEFORE UPDATE ON api.payments FOR EACH ROW
    WHEN ((OLD.status, OLD.refunded_amount, OLD.failure_reason)
          IS DISTINCT FROM (NEW.status, NEW.refunded_amount, NEW.failure_reason))
    EXECUTE FUNCTION api.record_payment_change();

-- The relay once woke on a NOTIFY from an insert trigger on each outbox, both calling this
-- function; it polls now. CASCADE drops both triggers (processor.outbox's too) with it.
DROP TRIGGER IF EXISTS api_outbox_notify ON api.outbox;
DROP FUNCTION IF EXISTS api.notify_outbox() CASCADE;
