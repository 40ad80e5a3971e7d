-- api 0006: payouts, and the balance projection they reserve against.

-- What each merchant may pay out, per currency: credited by its payments' captures, debited by
-- their refunds, and reserved by a payout in the transaction that records it (UPDATE ... WHERE
-- available >= amount, under the row's lock: concurrent payouts never overdraw). The ledger stays
-- the truth; this is the API's projection of it, kept by the read model.
CREATE TABLE api.balances (
    merchant_id text        NOT NULL REFERENCES api.merchants (id),
    currency    text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    available   bigint      NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, currency)
);

-- The events the read model has counted in balances, each once.
CREATE TABLE api.balance_events (
    event_id   uuid        PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api.payouts (
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
CREATE INDEX payouts_list ON api.payouts (merchant_id, created_at DESC, id DESC);
