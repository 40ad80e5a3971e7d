-- api 0003: merchant self-service (issue 16).

-- What each merchant asked of its webhook endpoints (never their secrets: the notifier keeps
-- those). deleted_at: deleted endpoints are kept, so that an id is never reused or shown again.
CREATE TABLE api.webhook_endpoints (
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
CREATE INDEX webhook_endpoints_by_merchant ON api.webhook_endpoints (merchant_id, id)
    WHERE deleted_at IS NULL;

-- Every event of a merchant's payments, as GET /v1/events shows it (data: the payment just after
-- it), kept by the read model from the event log for api.events_retention_days.
CREATE TABLE api.events (
    id          uuid        PRIMARY KEY,
    merchant_id text        NOT NULL,
    payment_id  text        NOT NULL,
    type        text        NOT NULL,
    created_at  timestamptz NOT NULL,
    data        jsonb       NOT NULL
);
-- GET /v1/events pages a merchant's events newest first.
CREATE INDEX events_by_merchant ON api.events (merchant_id, created_at, id);
CREATE INDEX events_by_age ON api.events (created_at);

-- Wakes the merchant-wide event streams (GET /v1/events/stream): one notification per merchant
-- per statement, whatever the number of rows.
CREATE FUNCTION api.announce_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('flowpay_merchant_events', m.merchant_id)
    FROM (SELECT DISTINCT merchant_id FROM inserted) m;
    RETURN NULL;
END $$;
CREATE TRIGGER events_announce AFTER INSERT ON api.events
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
    EXECUTE FUNCTION api.announce_events();

-- Browsers read a payment with its client secret; only its SHA-256 is kept.
ALTER TABLE api.payments ADD COLUMN client_secret_hash bytea;
-- The web origins whose pages may read payments with client secrets (CORS).
ALTER TABLE api.merchants ADD COLUMN allowed_origins text[] NOT NULL DEFAULT '{}';
