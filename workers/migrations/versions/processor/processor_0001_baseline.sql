-- processor 0001, the baseline: the processor schema as schema.sql made it before migrations.
-- Every statement is idempotent, so that a database made by an earlier `flowpay db init` (which
-- applied schema.sql) adopts this history: what it lacks is added, what it holds is kept. Later
-- changes are new numbered migrations, never edits here.

CREATE SCHEMA IF NOT EXISTS processor;

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
-- The trace of the request that created the payment (a W3C traceparent; NULL when tracing is
-- off): the reconciler's later checks and the events they emit stay in the payment's trace.
ALTER TABLE processor.payments ADD COLUMN IF NOT EXISTS traceparent text;

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

-- The relay polls the outbox, at once again while it has rows. No NOTIFY on insert: a notifying
-- transaction holds PostgreSQL's one notify lock through its commit and fsync, so it serialised
-- every intake commit.

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

-- The trigger that once sent that NOTIFY (api's baseline drops it too, with its function).
DROP TRIGGER IF EXISTS processor_outbox_notify ON processor.outbox;
