-- api 0004: merchant self-service (issue 16).

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
