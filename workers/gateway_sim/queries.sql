-- The gateway simulator's SQLite record (not FlowPay's PostgreSQL: it stands for someone else's
-- system). Idempotency keys live on the objects they created, one namespace per endpoint; the
-- UNIQUE constraints back up the BEGIN IMMEDIATE transactions that check them.

-- name: schema
CREATE TABLE IF NOT EXISTS charges (
    seq             INTEGER PRIMARY KEY,  -- creation order ("oldest first")
    id              TEXT    NOT NULL UNIQUE,
    idempotency_key TEXT    NOT NULL UNIQUE,
    request_hash    TEXT    NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT    NOT NULL,
    payment_method  TEXT    NOT NULL,
    reference       TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('succeeded', 'declined')),
    decline_code    TEXT,
    amount_refunded INTEGER NOT NULL DEFAULT 0 CHECK (amount_refunded BETWEEN 0 AND amount),
    created_at      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_by_reference ON charges (reference, seq);
-- An authorization holds an amount on the card until it is captured (all or part of it: the
-- capture makes a charge, the rest is released) or voided. Files made before authorizations
-- get these tables when they are opened again (IF NOT EXISTS).
CREATE TABLE IF NOT EXISTS authorizations (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    idempotency_key TEXT    NOT NULL UNIQUE,
    request_hash    TEXT    NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT    NOT NULL,
    payment_method  TEXT    NOT NULL,
    reference       TEXT    NOT NULL,
    status          TEXT    NOT NULL
                    CHECK (status IN ('requires_capture', 'declined', 'captured', 'canceled')),
    decline_code    TEXT,
    amount_captured INTEGER NOT NULL DEFAULT 0 CHECK (amount_captured BETWEEN 0 AND amount),
    charge_id       TEXT    REFERENCES charges (id),
    created_at      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS authorizations_by_reference ON authorizations (reference, seq);
-- Captures and voids, each once per key (a namespace per kind), with the answer they gave.
CREATE TABLE IF NOT EXISTS authorization_actions (
    seq              INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('capture', 'void')),
    idempotency_key  TEXT    NOT NULL,
    request_hash     TEXT    NOT NULL,
    authorization_id TEXT    NOT NULL REFERENCES authorizations (id),
    answer           TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    UNIQUE (kind, idempotency_key)
);
CREATE TABLE IF NOT EXISTS refunds (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    idempotency_key TEXT    NOT NULL UNIQUE,
    request_hash    TEXT    NOT NULL,
    charge_id       TEXT    NOT NULL REFERENCES charges (id),
    amount          INTEGER NOT NULL CHECK (amount > 0),
    status          TEXT    NOT NULL CHECK (status = 'succeeded'),
    created_at      TEXT    NOT NULL,
    reference       TEXT  -- the caller's own id for the refund, to find it by
);
-- A payout of a merchant's balance to its bank account (as Stripe's): paid at once, or failed
-- for a test bank account that fails (failure_code says why).
CREATE TABLE IF NOT EXISTS payouts (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL UNIQUE,
    idempotency_key TEXT    NOT NULL UNIQUE,
    request_hash    TEXT    NOT NULL,
    amount          INTEGER NOT NULL CHECK (amount > 0),
    currency        TEXT    NOT NULL,
    destination     TEXT    NOT NULL,
    reference       TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('paid', 'failed')),
    failure_code    TEXT,
    created_at      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS payouts_by_reference ON payouts (reference, seq);

-- name: refund_columns
SELECT name FROM pragma_table_info('refunds');

-- name: refund_add_reference
-- Files made before refunds had a reference get the column (SQLite has no ADD COLUMN IF NOT
-- EXISTS: the store adds it when refund_columns lacks it).
ALTER TABLE refunds ADD COLUMN reference TEXT;

-- name: refunds_by_reference_index
CREATE INDEX IF NOT EXISTS refunds_by_reference ON refunds (reference, seq)
    WHERE reference IS NOT NULL;

-- name: charge_by_key
SELECT * FROM charges WHERE idempotency_key = ?;

-- name: charge_by_id
SELECT * FROM charges WHERE id = ?;

-- name: charges_by_reference
SELECT * FROM charges WHERE reference = ? ORDER BY seq;

-- name: all_charges
SELECT * FROM charges ORDER BY seq;

-- name: all_authorizations
-- With when it stopped holding (its capture or void), for the simulator's own listing.
SELECT a.*, (SELECT min(x.created_at) FROM authorization_actions x
             WHERE x.authorization_id = a.id) AS ended_at
FROM authorizations a ORDER BY a.seq;

-- name: all_payouts
SELECT * FROM payouts ORDER BY seq;

-- name: charge_insert
INSERT INTO charges (
    id, idempotency_key, request_hash, amount, currency, payment_method, reference, status,
    decline_code, created_at
) VALUES (
    :id, :idempotency_key, :request_hash, :amount, :currency, :payment_method, :reference,
    :status, :decline_code, :created_at
);

-- name: charge_add_refunded
UPDATE charges SET amount_refunded = amount_refunded + :amount WHERE id = :id;

-- name: refund_by_key
SELECT * FROM refunds WHERE idempotency_key = ?;

-- name: refund_insert
INSERT INTO refunds (
    id, idempotency_key, request_hash, charge_id, amount, status, created_at, reference
) VALUES (
    :id, :idempotency_key, :request_hash, :charge_id, :amount, 'succeeded', :created_at,
    :reference
);

-- name: refunds_by_reference
SELECT * FROM refunds WHERE reference = ? ORDER BY seq;

-- name: connection_setup
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA busy_timeout = 10000;
PRAGMA foreign_keys = ON;

-- name: begin_immediate
BEGIN IMMEDIATE;

-- name: commit
COMMIT;

-- name: rollback
ROLLBACK;

-- name: savepoint
SAVEPOINT job;

-- name: release
RELEASE job;

-- name: rollback_to
ROLLBACK TO job;

-- name: payout_by_key
SELECT * FROM payouts WHERE idempotency_key = ?;

-- name: payouts_by_reference
SELECT * FROM payouts WHERE reference = ? ORDER BY seq;

-- name: payout_insert
INSERT INTO payouts (
    id, idempotency_key, request_hash, amount, currency, destination, reference, status,
    failure_code, created_at
) VALUES (
    :id, :idempotency_key, :request_hash, :amount, :currency, :destination, :reference,
    :status, :failure_code, :created_at
);

-- name: authorization_by_key
SELECT * FROM authorizations WHERE idempotency_key = ?;

-- name: authorization_by_id
SELECT * FROM authorizations WHERE id = ?;

-- name: authorizations_by_reference
SELECT * FROM authorizations WHERE reference = ? ORDER BY seq;

-- name: authorization_insert
INSERT INTO authorizations (
    id, idempotency_key, request_hash, amount, currency, payment_method, reference, status,
    decline_code, created_at
) VALUES (
    :id, :idempotency_key, :request_hash, :amount, :currency, :payment_method, :reference,
    :status, :decline_code, :created_at
);

-- name: authorization_settle
UPDATE authorizations SET status = :status, amount_captured = :amount_captured,
    charge_id = :charge_id
WHERE id = :id;

-- name: action_by_key
SELECT * FROM authorization_actions WHERE kind = ? AND idempotency_key = ?;

-- name: action_insert
INSERT INTO authorization_actions (
    kind, idempotency_key, request_hash, authorization_id, answer, created_at
) VALUES (:kind, :idempotency_key, :request_hash, :authorization_id, :answer, :created_at);
