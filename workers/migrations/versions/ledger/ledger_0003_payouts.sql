-- ledger 0003: payouts. The chart gains payouts_in_transit (merchants' payouts reserved and on
-- their way through the gateway; pending entries only) and payouts_paid (paid out: a contra
-- account of gateway_receivable, as refunds_paid). A payout's reservation is its pending
-- transfer, resolved by a post (paid) or a void (failed). As the baseline says, the ledger
-- changes through public.ledger_install, replaced here (idempotent) and run for 'ledger'.

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
