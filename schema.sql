-- FlowPay's whole schema, one PostgreSQL schema per service, written as one readable whole. The
-- database gets it from the numbered migrations in workers/migrations/versions/ (`flowpay db
-- migrate`): a change is a new migration there and the same change here, and
-- tests/test_migrations.py checks that both give exactly the same schema. Money is bigint minor
-- units, never a float.

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
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- The origins (scheme://host[:port]) whose pages may use a client secret of the merchant's
    -- payments (CORS); none by default.
    allowed_origins text[]  NOT NULL DEFAULT '{}'
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
                                CHECK (status IN ('initiated', 'processing', 'requires_action',
                                                  'requires_capture', 'succeeded', 'failed',
                                                  'canceled', 'refunded')),
    refunded_amount bigint      NOT NULL DEFAULT 0 CONSTRAINT payments_refunded_range
                                CHECK (refunded_amount >= 0 AND refunded_amount <= amount),
    failure_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The number of the payment's latest change (see api.payment_changes).
    version         integer     NOT NULL DEFAULT 1,
    -- As Stripe's PaymentIntents: 'manual' stops at requires_capture once authorized.
    capture_method  text        NOT NULL DEFAULT 'automatic' CONSTRAINT payments_capture_method_known
                                CHECK (capture_method IN ('automatic', 'manual')),
    -- What the authorization holds that may still be captured (manual capture only).
    amount_capturable bigint    NOT NULL DEFAULT 0 CONSTRAINT payments_capturable_range
                                CHECK (amount_capturable >= 0 AND amount_capturable <= amount),
    -- What was captured: the amount (automatic), or what a manual capture took.
    amount_received bigint      NOT NULL DEFAULT 0 CONSTRAINT payments_received_range
                                CHECK (amount_received >= 0 AND amount_received <= amount),
    cancellation_reason text    CONSTRAINT payments_cancellation_reason_known
                                CHECK (cancellation_reason IN ('duplicate', 'fraudulent',
                                       'requested_by_customer', 'abandoned', 'expired')),
    -- While requires_action: what the customer must do (Stripe's shape: type, redirect_to_url).
    next_action     jsonb,
    -- What lets a browser read this one payment (<id>_secret_<random>); shown to the merchant,
    -- so kept as it is and compared in constant time. Payments made before it have none.
    client_secret   text
);
-- GET /v1/payments pages a merchant's payments newest first by id (ids sort by creation time):
-- this index gives each page in that order, so no page sorts or filters the merchant's whole
-- history (it replaced an index in (merchant_id, created_at, id), which no query's order used:
-- the intake maintains one secondary index per payment).
CREATE INDEX IF NOT EXISTS payments_by_merchant_id ON api.payments (merchant_id, id);

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

-- What each merchant may pay out, per currency: credited by its payments' captures, debited by
-- their refunds, and reserved by a payout in the transaction that records it (UPDATE ... WHERE
-- available >= amount, under the row's lock: concurrent payouts never overdraw). The ledger stays
-- the truth; this is the API's projection of it, kept by the read model.
CREATE TABLE IF NOT EXISTS api.balances (
    merchant_id text        NOT NULL REFERENCES api.merchants (id),
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    available   bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, currency)
);

-- The events the read model has counted in balances, each once.
CREATE TABLE IF NOT EXISTS api.balance_events (
    event_id   uuid        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api.payouts (
    id             text        PRIMARY KEY,
    merchant_id    text        NOT NULL REFERENCES api.merchants (id),
    amount         bigint      NOT NULL CHECK (amount > 0 AND amount <= 1000000000000),
    currency       text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    destination    text,
    status         text        NOT NULL DEFAULT 'pending'
                               CHECK (status IN ('pending', 'paid', 'failed')),
    failure_reason text,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS payouts_list ON api.payouts (merchant_id, created_at DESC, id DESC);

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
CREATE TABLE IF NOT EXISTS api.payment_changes (
    payment_id      text        NOT NULL REFERENCES api.payments (id),
    version         integer     NOT NULL CHECK (version > 1),
    status          text        NOT NULL,
    refunded_amount bigint      NOT NULL,
    failure_reason  text,
    changed_at      timestamptz NOT NULL,
    amount_capturable bigint    NOT NULL DEFAULT 0,
    amount_received bigint      NOT NULL DEFAULT 0,
    cancellation_reason text,
    next_action     jsonb,
    CONSTRAINT payment_changes_pkey PRIMARY KEY (payment_id, version)
);

CREATE OR REPLACE FUNCTION api.record_payment_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    INSERT INTO api.payment_changes
        (payment_id, version, status, refunded_amount, failure_reason, changed_at,
         amount_capturable, amount_received, cancellation_reason, next_action)
    VALUES (NEW.id, NEW.version, NEW.status, NEW.refunded_amount, NEW.failure_reason,
            NEW.updated_at, NEW.amount_capturable, NEW.amount_received, NEW.cancellation_reason,
            NEW.next_action);
    PERFORM pg_notify('flowpay_payment_changes', NEW.id);
    RETURN NEW;
END $$;

CREATE OR REPLACE TRIGGER payments_record_change BEFORE UPDATE ON api.payments FOR EACH ROW
    WHEN ((OLD.status, OLD.refunded_amount, OLD.failure_reason, OLD.amount_capturable,
           OLD.amount_received, OLD.cancellation_reason, OLD.next_action)
          IS DISTINCT FROM (NEW.status, NEW.refunded_amount, NEW.failure_reason,
                            NEW.amount_capturable, NEW.amount_received, NEW.cancellation_reason,
                            NEW.next_action))
    EXECUTE FUNCTION api.record_payment_change();

-- What each merchant asked of its webhook endpoints (never their secrets: the notifier keeps
-- those). deleted_at: deleted endpoints are kept, so that an id is never reused or shown again.
CREATE TABLE IF NOT EXISTS api.webhook_endpoints (
    id             text        PRIMARY KEY,
    merchant_id    text        NOT NULL REFERENCES api.merchants (id),
    url            text        NOT NULL CHECK (length(url) <= 2000),
    description    text        CHECK (length(description) <= 5000),
    enabled_events text[]      NOT NULL,
    status         text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deleted_at     timestamptz
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_by_merchant ON api.webhook_endpoints (merchant_id, id)
    WHERE deleted_at IS NULL;

-- Every event of a merchant's payments, as GET /v1/events shows it (data: the payment just after
-- it), kept by the read model from the event log for api.events_retention_days.
CREATE TABLE IF NOT EXISTS api.events (
    id          uuid        PRIMARY KEY,
    merchant_id text        NOT NULL,
    payment_id  text        NOT NULL,
    type        text        NOT NULL,
    created_at  timestamptz NOT NULL,
    data        jsonb       NOT NULL,
    -- Its place in commit order, for GET /v1/events/stream: the transaction that recorded it,
    -- then its order in that transaction. A stream reads only events of transactions older
    -- than every one still running (pg_snapshot_xmin), so none can appear behind its cursor.
    tx          xid8        NOT NULL DEFAULT pg_current_xact_id(),
    seq         bigint      GENERATED ALWAYS AS IDENTITY
);
-- GET /v1/events pages a merchant's events newest first.
CREATE INDEX IF NOT EXISTS events_by_merchant ON api.events (merchant_id, created_at, id);
CREATE INDEX IF NOT EXISTS events_by_age ON api.events (created_at);
CREATE INDEX IF NOT EXISTS events_in_commit_order ON api.events (merchant_id, tx, seq);

-- Streams are woken per merchant (NOTIFY flowpay_merchant_events, payload = merchant id), once
-- per merchant and statement however many of its events the statement records.
CREATE OR REPLACE FUNCTION api.notify_merchant_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowpay_merchant_events', merchant_id)
    FROM (SELECT DISTINCT merchant_id FROM recorded) AS m;
    RETURN NULL;
END $$;

CREATE OR REPLACE TRIGGER events_notify_merchants AFTER INSERT ON api.events
    REFERENCING NEW TABLE AS recorded FOR EACH STATEMENT
    EXECUTE FUNCTION api.notify_merchant_events();


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
                                CHECK (state IN ('initiated', 'processing', 'requires_action',
                                                 'requires_capture', 'succeeded', 'failed',
                                                 'canceled', 'refunded')),
    charge_id       text,
    failure_reason  text,
    -- Bounded by what was received (a partial capture took less than the amount).
    refunded_amount bigint      NOT NULL DEFAULT 0 CONSTRAINT processor_payments_refund_range
                                CHECK (refunded_amount >= 0
                                       AND refunded_amount <= coalesce(amount_received, amount)),
    -- Non-null: the reconciler owns this payment (unknown outcome, or a watch for a late charge).
    next_check_at   timestamptz,
    checks          integer     NOT NULL DEFAULT 0,
    reversed_charge_id text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- The trace of the request that created the payment (a W3C traceparent; NULL when tracing
    -- is off): the reconciler's later checks and the events they emit stay in the payment's trace.
    traceparent     text,
    -- When the payment left processing: a failed one is watched for a late charge for
    -- processor.late_charge_window_s from then.
    settled_at      timestamptz,
    -- What a manual capture took (the rest was released); NULL: the whole amount. The amount
    -- the payment was made for stays, as Stripe keeps ``amount`` beside ``amount_received``.
    amount_received bigint      CONSTRAINT processor_payments_received_range
                                CHECK (amount_received > 0 AND amount_received <= amount),
    -- manual: authorized by the orchestrator's command, captured or voided later; a manual
    -- payment waiting for its customer (3-D Secure) goes on to requires_capture.
    capture_method  text        NOT NULL DEFAULT 'automatic'
                                CONSTRAINT processor_payments_capture_method_known
                                CHECK (capture_method IN ('automatic', 'manual')),
    CONSTRAINT processor_payments_charged_when_succeeded
        CHECK (state NOT IN ('succeeded', 'refunded') OR charge_id IS NOT NULL),
    CONSTRAINT processor_payments_fully_refunded
        CHECK (state <> 'refunded' OR refunded_amount = coalesce(amount_received, amount))
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
    updated_at        timestamptz NOT NULL DEFAULT now(),
    -- Non-null: the refund's outcome is unknown and the reconciler owns it (checks: how many
    -- times it was deferred, for the backoff).
    next_check_at     timestamptz,
    checks            integer     NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS processor_refunds_by_payment ON processor.refunds (payment_id);
CREATE INDEX IF NOT EXISTS processor_refunds_due ON processor.refunds (next_check_at)
    WHERE next_check_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS processor.attempts (
    id          bigserial   PRIMARY KEY,
    payment_id  text        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('charge', 'lookup', 'refund', 'reversal',
                                                     'cancel', 'report')),
    outcome     text        NOT NULL,
    detail      text,
    duration_ms integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS processor_attempts_by_payment ON processor.attempts (payment_id, id);

-- The orchestrator's commands the processor executed, each recorded in the transaction of its
-- effects: a redelivered command is found here and changes nothing.
CREATE TABLE IF NOT EXISTS processor.commands (
    command_id  uuid        PRIMARY KEY,
    payment_id  text        NOT NULL,
    type        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Payouts sent through the gateway, each once, with its outcome: paid or failed at once
-- (recorded with the event that answers the payout saga's command), or in_transit (Stripe pays
-- days later), settled later by the gateway's report or the reconciler's look-up, which emit
-- the answering event then.
CREATE TABLE IF NOT EXISTS processor.payouts (
    payout_id         text        PRIMARY KEY,
    merchant_id       text        NOT NULL,
    amount            bigint      NOT NULL CHECK (amount > 0 AND amount <= 1000000000000),
    currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status            text        NOT NULL CONSTRAINT processor_payouts_status_known
                                  CHECK (status IN ('in_transit', 'paid', 'failed')),
    gateway_payout_id text,
    -- The gateway's failure code (or gateway_rejected); NULL when paid.
    failure           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- The payout saga's, for the event a later settlement emits.
    correlation_id    text,
    -- Non-null: in transit, the reconciler looks it up then (checks: how many times it did).
    next_check_at     timestamptz,
    checks            integer     NOT NULL DEFAULT 0,
    -- When it was paid or failed (NULL while in transit).
    settled_at        timestamptz,
    CONSTRAINT processor_payouts_paid_at_the_gateway
        CHECK (status = 'failed' OR gateway_payout_id IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS processor_payouts_due ON processor.payouts (next_check_at)
    WHERE next_check_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- outboxes: the relay polls them, at once again while they have rows. No NOTIFY on insert:
-- a notifying transaction holds PostgreSQL's one notify lock through its commit and fsync, so
-- it serialised every intake commit (pgbench of the intake: ~600 -> ~2,500 tps without it).
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

-- ---------------------------------------------------------------------------------------------
-- notifier: merchants' webhook endpoints (Standard Webhooks secrets, whsec_..., sealed)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS notifier.endpoints (
    id          text        PRIMARY KEY,
    merchant_id text        NOT NULL,
    url         text        NOT NULL CHECK (url ~ '^https?://'),
    status      text        NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz,
    -- Why it is disabled: 'gone' (it answered 410), 'failing' (every attempt failed for
    -- notifier.disable_after_s, counted from failing_since), 'operator' (`webhooks disable`),
    -- 'merchant' (through the API), 'deleted' (by its merchant: for good).
    disabled_reason text        CONSTRAINT endpoints_disabled_reason_known
                                CHECK (disabled_reason IN ('gone', 'failing', 'operator', 'merchant', 'deleted')),
    -- When its current run of failed attempts began; NULL after a success.
    failing_since timestamptz,
    -- The event types it is sent ('*': every type webhooks are sent for).
    enabled_events text[]   NOT NULL DEFAULT '{*}',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS endpoints_by_merchant ON notifier.endpoints (merchant_id);

-- Its signing secrets (Standard Webhooks, whsec_...), newest last. After a rotation the earlier
-- ones sign too until they expire, so that a merchant can switch over without a gap.
CREATE TABLE IF NOT EXISTS notifier.endpoint_secrets (
    id            bigserial   PRIMARY KEY,
    endpoint_id   text        NOT NULL REFERENCES notifier.endpoints (id),
    -- A secret stored before secrets were encrypted, until `flowpay secrets rotate` seals it;
    -- NULL for every other (see secret_sealed).
    secret_plain  text        CONSTRAINT endpoint_secrets_plain_check
                              CHECK (secret_plain LIKE 'whsec_%'),
    -- The secret encrypted with AES-256-GCM (workers.core.sealing): the id of the key, and
    -- nonce || ciphertext || tag, sealed for its endpoint's id.
    secret_key_id text,
    secret_sealed bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    CONSTRAINT endpoint_secrets_sealed_or_plain
        CHECK ((secret_sealed IS NULL) <> (secret_plain IS NULL)
               AND (secret_sealed IS NULL) = (secret_key_id IS NULL))
);
CREATE INDEX IF NOT EXISTS endpoint_secrets_by_endpoint ON notifier.endpoint_secrets (endpoint_id, id);

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
    -- Carried from the event to every attempt: its log lines name the correlation id, and its
    -- span is a child of the event's (a W3C traceparent; NULL when tracing is off).
    correlation_id  text,
    traceparent     text,
    CONSTRAINT deliveries_once_per_event_and_endpoint UNIQUE (event_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS deliveries_due ON notifier.deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_by_payment ON notifier.deliveries (payment_id);
-- The claim ranks each endpoint's due deliveries (in this order) and counts its live leases.
CREATE INDEX IF NOT EXISTS deliveries_due_by_endpoint
    ON notifier.deliveries (endpoint_id, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_leased ON notifier.deliveries (endpoint_id)
    WHERE status = 'pending' AND leased_until IS NOT NULL;
-- The gauges count the pending and the failed deliveries every second, each on its index.
CREATE INDEX IF NOT EXISTS deliveries_failed ON notifier.deliveries (id) WHERE status = 'failed';

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

-- ---------------------------------------------------------------------------------------------
-- ops: the operator's own records (dead letters replayed)
-- ---------------------------------------------------------------------------------------------

CREATE SCHEMA IF NOT EXISTS ops;

CREATE TABLE IF NOT EXISTS ops.dlq_replays (
    dead_letter text        NOT NULL,  -- "<partition>:<offset>" in the dead-letter topic
    topic       text        NOT NULL,  -- the dead-letter topic's name
    replayed_at timestamptz NOT NULL DEFAULT now(),
    forced      boolean     NOT NULL DEFAULT false
);
CREATE INDEX IF NOT EXISTS dlq_replays_by_letter ON ops.dlq_replays (topic, dead_letter);

-- ---------------------------------------------------------------------------------------------
-- orchestrator: saga instances (state and history), their timers, the events heard, the
-- commands' outbox
-- ---------------------------------------------------------------------------------------------

CREATE SCHEMA IF NOT EXISTS orchestrator;

CREATE TABLE IF NOT EXISTS orchestrator.sagas (
    id             text        PRIMARY KEY,
    type           text        NOT NULL CONSTRAINT sagas_type_known CHECK (type IN ('payment', 'refund', 'payout')),
    -- Which declared saga it runs (workers/orchestrator/sagas.py).
    definition     text        NOT NULL,
    -- The payment it is about: its commands' Kafka key.
    subject        text        NOT NULL,
    -- What tells a subject's sagas of one type apart: '' for a payment, a refund's id.
    reference      text        NOT NULL DEFAULT '',
    merchant_id    text        NOT NULL,
    correlation_id text        NOT NULL,
    state          text        NOT NULL CONSTRAINT sagas_state_known
                               CHECK (state IN ('running', 'waiting', 'compensating', 'done', 'failed')),
    -- The step it is at, and that step's number in its history (steps.seq).
    step           text        NOT NULL,
    step_seq       integer     NOT NULL CHECK (step_seq > 0),
    -- Its steps completed so far, in order: compensations run back from the last.
    completed      text[]      NOT NULL DEFAULT '{}',
    -- What its commands are built from (amounts, the reason of a cancel, ...).
    context        jsonb       NOT NULL,
    -- How it ended: succeeded, failed, canceled, refunded, refund_failed.
    outcome        text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    ended_at       timestamptz,
    CONSTRAINT sagas_one_per_reference UNIQUE (subject, type, reference),
    CONSTRAINT sagas_ended_with_outcome CHECK ((state IN ('done', 'failed')) = (outcome IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS sagas_by_state ON orchestrator.sagas (state, id);

-- Every step a saga entered, in order: the command it sent (its latest attempt) and the event
-- that answered it. A wait (no command) is answered by a merchant's request; a compensation
-- undoes a step that completed.
CREATE TABLE IF NOT EXISTS orchestrator.steps (
    saga_id      text        NOT NULL REFERENCES orchestrator.sagas (id),
    seq          integer     NOT NULL CHECK (seq > 0),
    name         text        NOT NULL,
    compensation boolean     NOT NULL DEFAULT false,
    command_type text,
    command_id   uuid,
    attempts     integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    entered_at   timestamptz NOT NULL,
    sent_at      timestamptz,
    answer_id    uuid,
    answer_type  text,
    answered_at  timestamptz,
    CONSTRAINT steps_pkey PRIMARY KEY (saga_id, seq),
    CONSTRAINT steps_command_whole CHECK ((command_type IS NULL) = (command_id IS NULL))
);

-- A step's timeout, in the database so that it survives restarts: the timer loop claims due
-- ones with FOR UPDATE SKIP LOCKED (several orchestrators never fire one twice). At most one
-- is armed per saga.
CREATE TABLE IF NOT EXISTS orchestrator.timers (
    id         bigserial   PRIMARY KEY,
    saga_id    text        NOT NULL REFERENCES orchestrator.sagas (id),
    step_seq   integer     NOT NULL,
    -- What firing does: send the step's command again, or compensate (an authorization expired).
    action     text        NOT NULL CONSTRAINT timers_action_known CHECK (action IN ('resend', 'compensate')),
    due_at     timestamptz NOT NULL,
    armed_at   timestamptz NOT NULL,
    status     text        NOT NULL DEFAULT 'armed'
                           CONSTRAINT timers_status_known CHECK (status IN ('armed', 'fired', 'canceled')),
    settled_at timestamptz,
    CONSTRAINT timers_settled_unless_armed CHECK ((status = 'armed') = (settled_at IS NULL))
);
CREATE INDEX IF NOT EXISTS timers_due ON orchestrator.timers (due_at) WHERE status = 'armed';
CREATE UNIQUE INDEX IF NOT EXISTS timers_one_armed ON orchestrator.timers (saga_id) WHERE status = 'armed';
CREATE INDEX IF NOT EXISTS timers_by_saga ON orchestrator.timers (saga_id, id);

-- Every event the orchestrator consumed, once (a clash on event_id means "already done"), and
-- what it did with it: the history of what each saga heard.
CREATE TABLE IF NOT EXISTS orchestrator.events (
    event_id    uuid        PRIMARY KEY,
    type        text        NOT NULL,
    subject     text        NOT NULL,
    saga_id     text        REFERENCES orchestrator.sagas (id),
    effect      text        NOT NULL CONSTRAINT events_effect_known
                            CHECK (effect IN ('started', 'advanced', 'ignored')),
    detail      text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS events_by_saga ON orchestrator.events (saga_id) WHERE saga_id IS NOT NULL;

-- Commands waiting for the relay, which publishes them to <prefix>.commands; written in the
-- transaction of the saga change that issues them. The shape of every outbox (event_id holds
-- the command's id).
CREATE TABLE IF NOT EXISTS orchestrator.outbox (
    id           bigserial   PRIMARY KEY,
    event_id     uuid        NOT NULL CONSTRAINT orchestrator_outbox_event_unique UNIQUE,
    message_key  bytea       NOT NULL,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS orchestrator_outbox_unpublished ON orchestrator.outbox (id) WHERE published_at IS NULL;

-- =============================================================================================
-- ledger: the double-entry ledger (issue #5). BEGIN of the ledger section.
-- =============================================================================================
-- Every ledger object is created by ledger_install(target), so that `flowpay replay` can build a
-- complete copy in a shadow schema and swap it in for `ledger` in one transaction. Function
-- bodies name their own schema (resolved when installed), hence replay re-runs ledger_install
-- on both schemas after renaming them. The chart of accounts and the posting rule of every
-- event type are in workers/ledger/rules.py. What the database itself guarantees:
--   * every journal transaction has two or more entries and balances per currency and phase
--     (deferred constraint triggers, checked at commit);
--   * entries carry CHECK (amount > 0); entries, transactions, applied events, dead letters and
--     accounts can be neither updated, deleted nor truncated (corrections are new transactions);
--   * an event is applied at most once (events' primary key) and so is a Kafka offset;
--   * a pending transfer is resolved (posted, captured or voided) at most once (unique pending_of);
--   * balances are maintained by a trigger from the entries and refuse any other writer.

CREATE OR REPLACE FUNCTION public.ledger_install(target text) RETURNS void
LANGUAGE plpgsql AS $install$
DECLARE
    s constant text := quote_ident(target);
BEGIN
    EXECUTE replace($ddl$
CREATE SCHEMA IF NOT EXISTS @s@;

-- One row. generation changes when replay swaps a rebuilt ledger in; run-ledger reads it in
-- every batch transaction and re-seeks to the stored offsets when it moved.
CREATE TABLE IF NOT EXISTS @s@.state (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    generation   bigint      NOT NULL DEFAULT 1,
    rebuilt_at   timestamptz,
    rebuilt_from text
);
INSERT INTO @s@.state (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- Per source partition: the next offset to apply (stored in the same transaction as the
-- postings) and the head of that partition's hash chain.
CREATE TABLE IF NOT EXISTS @s@.cursors (
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL CHECK (source_partition >= 0),
    next_offset      bigint      NOT NULL DEFAULT 0 CHECK (next_offset >= 0),
    chain_seq        bigint      NOT NULL DEFAULT 0 CHECK (chain_seq >= 0),
    chain_hash       bytea       NOT NULL DEFAULT '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea
                                 CHECK (length(chain_hash) = 32),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition)
);

CREATE TABLE IF NOT EXISTS @s@.accounts (
    id          text        PRIMARY KEY,
    code        text        NOT NULL CONSTRAINT accounts_code_check CHECK (code IN
                            ('gateway_receivable', 'refunds_paid', 'suspense', 'merchant_payable',
                             'authorization_holds', 'payouts_in_transit', 'payouts_paid')),
    merchant_id text,
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    normal_side text        NOT NULL CHECK (normal_side IN ('debit', 'credit')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT accounts_merchant_only_on_merchant_accounts
        CHECK ((merchant_id IS NOT NULL) = (code = 'merchant_payable')),
    CONSTRAINT accounts_id_currency UNIQUE (id, currency),
    CONSTRAINT accounts_identity UNIQUE NULLS NOT DISTINCT (code, merchant_id, currency)
);

-- Every event applied, once: a clash on event_id (or on its offset) means "already done".
CREATE TABLE IF NOT EXISTS @s@.events (
    event_id         uuid        PRIMARY KEY,
    type             text        NOT NULL,
    payment_id       text        NOT NULL,
    merchant_id      text        NOT NULL,
    amount           bigint      CHECK (amount > 0),
    currency         text,
    reference        text,
    outcome          text        NOT NULL CHECK (outcome IN ('posted', 'recorded')),
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    applied_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT events_offset_once UNIQUE (source_topic, source_partition, source_offset)
);
CREATE INDEX IF NOT EXISTS events_by_payment ON @s@.events (payment_id);

-- Messages the ledger could not apply (also sent to the dead-letter topic by run-ledger).
CREATE TABLE IF NOT EXISTS @s@.dead_letters (
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    event_id         uuid,
    error_type       text        NOT NULL,
    error            text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- Journal transactions. One per transfer; an event makes zero, one or two of them. The id is
-- derived from the event id, and the hash chains each transaction to the previous one of the
-- same source partition, so replaying a partition reproduces the very same chain.
CREATE TABLE IF NOT EXISTS @s@.transactions (
    id               uuid        PRIMARY KEY,
    kind             text        NOT NULL CONSTRAINT transactions_kind_check CHECK (kind IN
                                 ('authorize', 'post', 'capture', 'void', 'refund', 'late_charge',
                                  'charge_reversal')),
    payment_id       text        NOT NULL,
    merchant_id      text        NOT NULL,
    reference        text,
    pending_of       uuid        REFERENCES @s@.transactions (id),
    event_id         uuid        NOT NULL REFERENCES @s@.events (event_id),
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    seq              bigint      NOT NULL CHECK (seq > 0),
    prev_hash        bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash             bytea       NOT NULL CHECK (length(hash) = 32),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transactions_resolve_only_pending
        CHECK ((kind IN ('post', 'capture', 'void')) = (pending_of IS NOT NULL)),
    CONSTRAINT transactions_resolved_once UNIQUE (pending_of),
    CONSTRAINT transactions_once_per_reference UNIQUE NULLS NOT DISTINCT (payment_id, kind, reference),
    CONSTRAINT transactions_chain_position UNIQUE (source_topic, source_partition, seq),
    CONSTRAINT transactions_source UNIQUE (id, event_id, source_topic, source_partition, source_offset)
);

CREATE TABLE IF NOT EXISTS @s@.entries (
    txn_id           uuid        NOT NULL,
    line             smallint    NOT NULL CHECK (line > 0),
    account_id       text        NOT NULL,
    direction        text        NOT NULL CHECK (direction IN ('debit', 'credit')),
    phase            text        NOT NULL CHECK (phase IN ('pending', 'posted')),
    amount           bigint      NOT NULL CONSTRAINT entries_amount_positive CHECK (amount > 0),
    currency         text        NOT NULL,
    event_id         uuid        NOT NULL,
    source_topic     text        NOT NULL,
    source_partition integer     NOT NULL,
    source_offset    bigint      NOT NULL,
    PRIMARY KEY (txn_id, line),
    -- An entry's source is its transaction's, and its currency its account's.
    CONSTRAINT entries_source FOREIGN KEY (txn_id, event_id, source_topic, source_partition, source_offset)
        REFERENCES @s@.transactions (id, event_id, source_topic, source_partition, source_offset),
    CONSTRAINT entries_account_currency FOREIGN KEY (account_id, currency)
        REFERENCES @s@.accounts (id, currency)
);

-- Sums of entries per account and phase, kept by a trigger on entries (and by nothing else).
CREATE TABLE IF NOT EXISTS @s@.balances (
    account_id text   NOT NULL REFERENCES @s@.accounts (id),
    phase      text   NOT NULL CHECK (phase IN ('pending', 'posted')),
    debits     bigint NOT NULL DEFAULT 0 CHECK (debits >= 0),
    credits    bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
    PRIMARY KEY (account_id, phase)
);

-- A ledger installed before payouts (ledger 0003) gets today's constraints in place; a new one
-- gets them again, unchanged.
ALTER TABLE @s@.accounts DROP CONSTRAINT accounts_code_check;
ALTER TABLE @s@.accounts ADD CONSTRAINT accounts_code_check CHECK (code IN
    ('gateway_receivable', 'refunds_paid', 'suspense', 'merchant_payable', 'authorization_holds',
     'payouts_in_transit', 'payouts_paid'));
ALTER TABLE @s@.transactions DROP CONSTRAINT transactions_kind_check;
ALTER TABLE @s@.transactions ADD CONSTRAINT transactions_kind_check CHECK (kind IN
    ('authorize', 'post', 'capture', 'void', 'refund', 'late_charge', 'charge_reversal'));
ALTER TABLE @s@.transactions DROP CONSTRAINT transactions_resolve_only_pending;
ALTER TABLE @s@.transactions ADD CONSTRAINT transactions_resolve_only_pending
    CHECK ((kind IN ('post', 'capture', 'void')) = (pending_of IS NOT NULL));

CREATE OR REPLACE FUNCTION @s@.check_balanced() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    txn uuid;
    lines bigint;
    unbalanced text;
BEGIN
    IF TG_TABLE_NAME = 'entries' THEN txn := NEW.txn_id; ELSE txn := NEW.id; END IF;
    SELECT sum(n), string_agg(currency || '/' || phase, ', ') FILTER (WHERE net <> 0)
      INTO lines, unbalanced
      FROM (SELECT currency, phase, count(*) AS n,
                   sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) AS net
              FROM @s@.entries WHERE txn_id = txn GROUP BY currency, phase) AS per;
    IF coalesce(lines, 0) < 2 THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced',
            MESSAGE = 'ledger transaction ' || txn || ' has ' || coalesce(lines, 0) || ' entries; it needs two or more';
    END IF;
    IF unbalanced IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_transaction_balanced',
            MESSAGE = 'ledger transaction ' || txn || ' does not balance in ' || unbalanced;
    END IF;
    RETURN NULL;
END $fn$;

CREATE OR REPLACE FUNCTION @s@.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'restrict_violation', CONSTRAINT = 'ledger_append_only',
        MESSAGE = TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME || ' is append-only: ' || TG_OP
                  || ' refused (post a reversing transaction instead)';
END $fn$;

CREATE OR REPLACE FUNCTION @s@.add_to_balances() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- In account order, so concurrent batches lock balance rows in one order (no deadlock).
    INSERT INTO @s@.balances AS b (account_id, phase, debits, credits)
    SELECT account_id, phase,
           coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0)::bigint,
           coalesce(sum(amount) FILTER (WHERE direction = 'credit'), 0)::bigint
      FROM new_entries GROUP BY account_id, phase ORDER BY account_id, phase
    ON CONFLICT (account_id, phase) DO UPDATE
       SET debits = b.debits + EXCLUDED.debits, credits = b.credits + EXCLUDED.credits;
    RETURN NULL;
END $fn$;

CREATE OR REPLACE FUNCTION @s@.balances_by_trigger_only() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    -- Depth 1 is a statement on balances itself; add_to_balances writes from depth 2.
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION USING ERRCODE = 'restrict_violation', CONSTRAINT = 'ledger_balances_derived',
            MESSAGE = TG_TABLE_SCHEMA || '.balances is kept from the entries: ' || TG_OP || ' refused';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $fn$;

CREATE OR REPLACE TRIGGER entries_to_balances AFTER INSERT ON @s@.entries
    REFERENCING NEW TABLE AS new_entries FOR EACH STATEMENT EXECUTE FUNCTION @s@.add_to_balances();
CREATE OR REPLACE TRIGGER balances_derived BEFORE INSERT OR UPDATE OR DELETE ON @s@.balances
    FOR EACH ROW EXECUTE FUNCTION @s@.balances_by_trigger_only();
CREATE OR REPLACE TRIGGER balances_no_truncate BEFORE TRUNCATE ON @s@.balances
    FOR EACH STATEMENT EXECUTE FUNCTION @s@.refuse_change();
$ddl$, '@s@', s);

    -- Append-only tables: row changes and TRUNCATE are refused.
    FOR t IN 1..5 LOOP
        EXECUTE replace(replace($ddl$
CREATE OR REPLACE TRIGGER @t@_append_only BEFORE UPDATE OR DELETE ON @s@.@t@
    FOR EACH ROW EXECUTE FUNCTION @s@.refuse_change();
CREATE OR REPLACE TRIGGER @t@_no_truncate BEFORE TRUNCATE ON @s@.@t@
    FOR EACH STATEMENT EXECUTE FUNCTION @s@.refuse_change();
$ddl$, '@t@', (ARRAY['transactions', 'entries', 'events', 'dead_letters', 'accounts'])[t]), '@s@', s);
    END LOOP;

    -- CREATE OR REPLACE is not available for constraint triggers: create them when missing.
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = 'transactions_balanced' AND tgrelid = (s || '.transactions')::regclass) THEN
        EXECUTE replace($ddl$
CREATE CONSTRAINT TRIGGER transactions_balanced AFTER INSERT ON @s@.transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION @s@.check_balanced();
$ddl$, '@s@', s);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_trigger
                   WHERE tgname = 'entries_balanced' AND tgrelid = (s || '.entries')::regclass) THEN
        EXECUTE replace($ddl$
CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON @s@.entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION @s@.check_balanced();
$ddl$, '@s@', s);
    END IF;
END $install$;

SELECT public.ledger_install('ledger');
-- END of the ledger section.
