-- The ledger's SQL. {schema} is the ledger schema written to: `ledger`, or replay's shadow.

-- name: generation_lock
-- Shared by every batch transaction; replay's swap takes it exclusively. A statement of its
-- own, so that the generation is read with a snapshot taken after the lock is held.
SELECT pg_advisory_xact_lock_shared(%(lock)s);

-- name: generation_get
SELECT generation FROM {schema}.state;

-- name: cursors_lock
-- Each partition's cursor, made when new, locked until the transaction ends: in one statement,
-- the update that changes nothing takes the lock on an existing row (as FOR UPDATE would, then
-- returning its latest version) and the insert holds a new one's. In key order, so two
-- consumers (a rebalance overlap) never deadlock on them.
INSERT INTO {schema}.cursors AS c (source_topic, source_partition)
SELECT t, p FROM unnest(%(topics)b::text[], %(partitions)b::int[]) AS w (t, p)
ORDER BY t, p
ON CONFLICT (source_topic, source_partition) DO UPDATE SET next_offset = c.next_offset
RETURNING c.source_topic, c.source_partition, c.next_offset, c.chain_seq, c.chain_hash;

-- name: cursors_of_topic
SELECT source_partition, next_offset FROM {schema}.cursors WHERE source_topic = %(topic)s;

-- name: cursors_save
UPDATE {schema}.cursors c
SET next_offset = v.n, chain_seq = v.seq, chain_hash = v.h, updated_at = now()
FROM unnest(%(topics)b::text[], %(partitions)b::int[], %(offsets)b::bigint[],
            %(seqs)b::bigint[], %(hashes)b::bytea[]) AS v (t, p, n, seq, h)
WHERE c.source_topic = v.t AND c.source_partition = v.p;

-- name: events_seen
SELECT event_id FROM {schema}.events WHERE event_id = ANY(%(ids)b::uuid[]);

-- name: payment_states
-- What the ledger holds per payment, derived from its transactions (rules.PaymentState.after
-- derives the same in memory). A transfer's amount: its debits in the phase that moves most;
-- what it posted: its debits in the posted phase; the account a pending transfer reserves on:
-- its pending debit's (gateway_receivable, or authorization_holds for a hold).
WITH per_phase AS (
    SELECT t.id, t.kind, t.payment_id, t.merchant_id, t.reference, e.phase,
           min(e.currency) AS currency,
           coalesce(sum(e.amount) FILTER (WHERE e.direction = 'debit'), 0) AS debits,
           min(split_part(e.account_id, ':', 1)) FILTER (WHERE e.direction = 'debit') AS debited
    FROM {schema}.transactions t
    JOIN {schema}.entries e ON e.txn_id = t.id
    WHERE t.payment_id = ANY(%(payment_ids)b::text[])
    -- Every column named: a replay's shadow loads without the primary key (workers.ledger.bulk).
    GROUP BY t.id, t.kind, t.payment_id, t.merchant_id, t.reference, e.phase
), txns AS (
    SELECT id, kind, payment_id, merchant_id, reference, min(currency) AS currency,
           max(debits)::bigint AS amount,
           coalesce(sum(debits) FILTER (WHERE phase = 'posted'), 0)::bigint AS posted,
           min(debited) FILTER (WHERE phase = 'pending') AS account
    FROM per_phase GROUP BY id, kind, payment_id, merchant_id, reference
)
SELECT payment_id,
       (array_agg(id) FILTER (WHERE kind = 'authorize'))[1] AS pending_txn,
       (array_agg(merchant_id) FILTER (WHERE kind = 'authorize'))[1] AS merchant_id,
       (array_agg(currency) FILTER (WHERE kind = 'authorize'))[1] AS currency,
       (array_agg(amount) FILTER (WHERE kind = 'authorize'))[1] AS amount,
       (array_agg(account) FILTER (WHERE kind = 'authorize'))[1] AS account,
       (array_agg(kind) FILTER (WHERE kind IN ('post', 'capture', 'void')))[1] AS resolution,
       coalesce(sum(amount) FILTER (WHERE kind = 'refund'), 0)::bigint AS refunded,
       coalesce(array_agg(ARRAY[kind, reference]) FILTER (WHERE reference IS NOT NULL),
                ARRAY[]::text[]) AS refs,
       coalesce(sum(posted) FILTER (WHERE kind IN ('post', 'capture', 'void')), 0)::bigint
           AS captured
FROM txns
GROUP BY payment_id;

-- name: accounts_add
INSERT INTO {schema}.accounts (id, code, merchant_id, currency, normal_side)
SELECT * FROM unnest(%(ids)b::text[], %(codes)b::text[], %(merchants)b::text[],
                     %(currencies)b::text[], %(sides)b::text[])
ON CONFLICT DO NOTHING;

-- name: events_copy
COPY {schema}.events (event_id, type, payment_id, merchant_id, amount, currency, reference,
                      outcome, source_topic, source_partition, source_offset)
FROM STDIN (FORMAT BINARY);

-- name: transactions_copy
COPY {schema}.transactions (id, kind, payment_id, merchant_id, reference, pending_of, event_id,
                            source_topic, source_partition, source_offset, seq, prev_hash, hash)
FROM STDIN (FORMAT BINARY);

-- name: entries_copy
COPY {schema}.entries (txn_id, line, account_id, direction, phase, amount, currency, event_id,
                       source_topic, source_partition, source_offset)
FROM STDIN (FORMAT BINARY);

-- name: dead_letter_add
INSERT INTO {schema}.dead_letters
    (source_topic, source_partition, source_offset, event_id, error_type, error)
VALUES (%(topic)s, %(partition)s, %(offset)s, %(event_id)s, %(error_type)s, %(error)s);

-- name: constraints_now
-- Fires the deferred balance checks at once, so a failure is caught inside a savepoint, then
-- defers them again: two statements in one round trip (no parameters, so never prepared).
SET CONSTRAINTS ALL IMMEDIATE; SET CONSTRAINTS ALL DEFERRED;

-- name: balances
SELECT a.id, a.code, a.merchant_id, a.currency, a.normal_side,
       coalesce(sum(b.debits - b.credits) FILTER (WHERE b.phase = 'pending'), 0)::bigint AS pending_net,
       coalesce(sum(b.debits - b.credits) FILTER (WHERE b.phase = 'posted'), 0)::bigint AS posted_net
FROM {schema}.accounts a
LEFT JOIN {schema}.balances b ON b.account_id = a.id
WHERE (%(merchant_id)s::text IS NULL OR a.merchant_id = %(merchant_id)s)
  AND (%(currency)s::text IS NULL OR a.currency = %(currency)s)
GROUP BY a.id
ORDER BY a.currency, a.merchant_id NULLS FIRST, a.code;

-- name: ledger_view
SELECT t.id AS transaction_id, t.kind, e.line, e.account_id AS account, e.direction, e.phase,
       e.amount, e.currency, t.event_id, t.source_topic AS topic,
       t.source_partition AS partition, t.source_offset AS offset, t.seq, t.created_at
FROM {schema}.transactions t
JOIN {schema}.entries e ON e.txn_id = t.id
WHERE t.payment_id = %(payment_id)s
ORDER BY t.source_topic, t.source_partition, t.seq, e.line;

-- name: check_unbalanced
-- Transactions with fewer than two entries, or that do not balance per currency and phase.
WITH per AS (
    SELECT txn_id, currency, phase, count(*) AS n,
           sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) AS net
    FROM {schema}.entries GROUP BY txn_id, currency, phase
)
SELECT t.id, t.payment_id, coalesce(sum(per.n), 0)::bigint AS lines,
       string_agg(per.currency || '/' || per.phase || ' debits exceed credits by ' || per.net, ', ')
           FILTER (WHERE per.net <> 0) AS unbalanced
FROM {schema}.transactions t
LEFT JOIN per ON per.txn_id = t.id
GROUP BY t.id
HAVING coalesce(sum(per.n), 0) < 2 OR bool_or(per.net <> 0)
ORDER BY t.id;

-- name: check_balances
-- Stored balances that differ from the sums of the entries.
WITH computed AS (
    SELECT account_id, phase,
           coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0)::bigint AS debits,
           coalesce(sum(amount) FILTER (WHERE direction = 'credit'), 0)::bigint AS credits
    FROM {schema}.entries GROUP BY account_id, phase
)
SELECT account_id, phase, coalesce(b.debits, 0), coalesce(b.credits, 0),
       coalesce(c.debits, 0), coalesce(c.credits, 0)
FROM {schema}.balances b
FULL JOIN computed c USING (account_id, phase)
WHERE coalesce(b.debits, 0) <> coalesce(c.debits, 0)
   OR coalesce(b.credits, 0) <> coalesce(c.credits, 0)
ORDER BY account_id, phase;

-- name: check_resolutions
-- Per payment with a pending transfer or a resolution: how often and how much was resolved.
WITH pending_debits AS (
    SELECT txn_id, coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0)::bigint AS amount
    FROM {schema}.entries WHERE phase = 'pending' GROUP BY txn_id
)
SELECT t.payment_id,
       coalesce(sum(d.amount) FILTER (WHERE t.kind = 'authorize'), 0)::bigint AS reserved,
       count(*) FILTER (WHERE t.kind IN ('post', 'capture', 'void')) AS resolutions,
       coalesce(sum(d.amount) FILTER (WHERE t.kind IN ('post', 'capture', 'void')), 0)::bigint AS released,
       count(*) FILTER (WHERE t.kind IN ('post', 'capture', 'void')
                        AND (a.id IS NULL OR a.kind <> 'authorize'
                             OR a.payment_id <> t.payment_id)) AS misdirected
FROM {schema}.transactions t
LEFT JOIN pending_debits d ON d.txn_id = t.id
LEFT JOIN {schema}.transactions a ON a.id = t.pending_of
WHERE t.kind IN ('authorize', 'post', 'capture', 'void')
GROUP BY t.payment_id
HAVING count(*) FILTER (WHERE t.kind IN ('post', 'capture', 'void')) > 1
    OR coalesce(sum(d.amount) FILTER (WHERE t.kind IN ('post', 'capture', 'void')), 0)
       > coalesce(sum(d.amount) FILTER (WHERE t.kind = 'authorize'), 0)
    OR count(*) FILTER (WHERE t.kind IN ('post', 'capture', 'void')
                        AND (a.id IS NULL OR a.kind <> 'authorize'
                             OR a.payment_id <> t.payment_id)) > 0
ORDER BY t.payment_id;

-- name: check_history
-- Per payment: what its applied events say happened, and what its postings say. A transfer's
-- amount is its debits in the phase that moves most; what it posted, its posted debits.
WITH amounts AS (
    SELECT txn_id, max(debits)::bigint AS amount,
           coalesce(sum(debits) FILTER (WHERE phase = 'posted'), 0)::bigint AS posted
    FROM (SELECT txn_id, phase,
                 coalesce(sum(amount) FILTER (WHERE direction = 'debit'), 0) AS debits
          FROM {schema}.entries GROUP BY txn_id, phase) AS per_phase
    GROUP BY txn_id
), tx AS (
    SELECT t.payment_id,
           count(*) FILTER (WHERE t.kind = 'authorize') AS authorizes,
           coalesce(sum(a.amount) FILTER (WHERE t.kind = 'authorize'), 0)::bigint AS authorized,
           count(*) FILTER (WHERE t.kind IN ('post', 'capture')) AS posts,
           coalesce(sum(a.posted) FILTER (WHERE t.kind IN ('post', 'capture')), 0)::bigint AS posted,
           count(*) FILTER (WHERE t.kind = 'capture') AS captures,
           count(*) FILTER (WHERE t.kind = 'void') AS voids,
           count(*) FILTER (WHERE t.kind = 'refund') AS refunds,
           coalesce(sum(a.amount) FILTER (WHERE t.kind = 'refund'), 0)::bigint AS refunded,
           count(*) FILTER (WHERE t.kind = 'late_charge') AS late_charges,
           coalesce(sum(a.amount) FILTER (WHERE t.kind = 'late_charge'), 0)::bigint AS late_charged,
           count(*) FILTER (WHERE t.kind = 'charge_reversal') AS reversals,
           coalesce(sum(a.amount) FILTER (WHERE t.kind = 'charge_reversal'), 0)::bigint AS reversed
    FROM {schema}.transactions t LEFT JOIN amounts a ON a.txn_id = t.id
    GROUP BY t.payment_id
), ev AS (
    SELECT payment_id,
           count(*) FILTER (WHERE type IN ('payment.initiated', 'payment.authorization_requested', 'payout.requested')) AS initiated,
           coalesce(sum(amount) FILTER (WHERE type IN ('payment.initiated', 'payment.authorization_requested', 'payout.requested')), 0)::bigint AS initiated_amount,
           count(*) FILTER (WHERE type IN ('payment.succeeded', 'payout.paid')) AS succeeded,
           count(*) FILTER (WHERE type IN ('payment.failed', 'payment.canceled', 'payout.failed')) AS failed,
           count(*) FILTER (WHERE type = 'payment.refunded') AS refunded_events,
           coalesce(sum(amount) FILTER (WHERE type = 'payment.refunded'), 0)::bigint AS refunded_amount,
           count(*) FILTER (WHERE type = 'payment.charge_reversed') AS reversed_events,
           coalesce(sum(amount) FILTER (WHERE type = 'payment.charge_reversed'), 0)::bigint AS reversed_amount
    FROM {schema}.events GROUP BY payment_id
)
SELECT payment_id,
       coalesce(initiated, 0), coalesce(initiated_amount, 0), coalesce(succeeded, 0),
       coalesce(failed, 0), coalesce(refunded_events, 0), coalesce(refunded_amount, 0),
       coalesce(reversed_events, 0), coalesce(reversed_amount, 0),
       coalesce(authorizes, 0), coalesce(authorized, 0), coalesce(posts, 0), coalesce(posted, 0),
       coalesce(captures, 0), coalesce(voids, 0), coalesce(refunds, 0), coalesce(refunded, 0),
       coalesce(late_charges, 0), coalesce(late_charged, 0), coalesce(reversals, 0),
       coalesce(reversed, 0)
FROM ev FULL JOIN tx USING (payment_id)
ORDER BY payment_id;

-- name: check_holds
-- The authorization holds. Each currency's: (what its accounts hold pending, what its accounts
-- ever posted, the holds not yet resolved). Then each resolution of the wrong kind: a capture
-- resolves a hold and a post a charge, never the other way round.
WITH holds AS (
    SELECT t.id, e.currency, e.amount
    FROM {schema}.transactions t JOIN {schema}.entries e ON e.txn_id = t.id
    WHERE t.kind = 'authorize' AND e.direction = 'debit' AND e.phase = 'pending'
      AND e.account_id LIKE 'authorization\_holds:%%'
), open_holds AS (
    SELECT currency, sum(amount)::bigint AS amount FROM holds h
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.transactions r WHERE r.pending_of = h.id)
    GROUP BY currency
), kept AS (
    SELECT a.currency,
           coalesce(sum(b.debits - b.credits) FILTER (WHERE b.phase = 'pending'), 0)::bigint AS pending,
           coalesce(sum(b.debits + b.credits) FILTER (WHERE b.phase = 'posted'), 0)::bigint AS posted
    FROM {schema}.accounts a LEFT JOIN {schema}.balances b ON b.account_id = a.id
    WHERE a.code = 'authorization_holds' GROUP BY a.currency
)
SELECT 'currency', currency, coalesce(k.pending, 0), coalesce(k.posted, 0), coalesce(o.amount, 0)
FROM kept k FULL JOIN open_holds o USING (currency)
WHERE coalesce(k.pending, 0) <> coalesce(o.amount, 0) OR coalesce(k.posted, 0) <> 0
UNION ALL
SELECT 'resolution', r.payment_id || ' ' || r.kind, 0, 0, 0
FROM {schema}.transactions r
WHERE r.kind IN ('post', 'capture')
  AND (r.kind = 'capture') <> EXISTS (SELECT 1 FROM holds h WHERE h.id = r.pending_of)
ORDER BY 1, 2;

-- name: check_payouts
-- The payouts. Each currency's payouts_in_transit: (what it holds pending, what it ever posted,
-- the reservations not yet paid or failed); then each currency's payouts_paid that holds
-- anything pending (it is only ever posted to).
WITH reservations AS (
    SELECT t.id, e.currency, e.amount
    FROM {schema}.transactions t JOIN {schema}.entries e ON e.txn_id = t.id
    WHERE t.kind = 'authorize' AND e.direction = 'credit' AND e.phase = 'pending'
      AND e.account_id LIKE 'payouts\_in\_transit:%%'
), open_reservations AS (
    SELECT currency, sum(amount)::bigint AS amount FROM reservations r
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.transactions v WHERE v.pending_of = r.id)
    GROUP BY currency
), kept AS (
    SELECT a.code, a.currency,
           coalesce(sum(b.credits - b.debits) FILTER (WHERE b.phase = 'pending'), 0)::bigint AS pending,
           coalesce(sum(b.debits + b.credits) FILTER (WHERE b.phase = 'posted'), 0)::bigint AS posted
    FROM {schema}.accounts a LEFT JOIN {schema}.balances b ON b.account_id = a.id
    WHERE a.code IN ('payouts_in_transit', 'payouts_paid') GROUP BY a.code, a.currency
)
SELECT 'payouts_in_transit', currency, coalesce(k.pending, 0), coalesce(k.posted, 0),
       coalesce(o.amount, 0)
FROM (SELECT * FROM kept WHERE code = 'payouts_in_transit') k
FULL JOIN open_reservations o USING (currency)
WHERE coalesce(k.pending, 0) <> coalesce(o.amount, 0) OR coalesce(k.posted, 0) <> 0
UNION ALL
SELECT 'payouts_paid', currency, pending, posted, 0 FROM kept
WHERE code = 'payouts_paid' AND pending <> 0
ORDER BY 1, 2;

-- name: chain_rows
-- Every transaction with its entries, in chain order.
SELECT t.source_topic, t.source_partition, t.seq, t.id, t.kind, t.payment_id, t.merchant_id,
       t.reference, t.pending_of, t.event_id, t.source_offset, t.prev_hash, t.hash,
       e.line, e.account_id, e.direction, e.phase, e.amount, e.currency
FROM {schema}.transactions t
LEFT JOIN {schema}.entries e ON e.txn_id = t.id
ORDER BY t.source_topic, t.source_partition, t.seq, e.line;

-- name: chain_heads
SELECT source_topic, source_partition, chain_seq, chain_hash FROM {schema}.cursors;

-- Replay. {schema} is the shadow being built, {live} the ledger it replaces, {previous} where
-- the replaced ledger is kept. "Replayed" rows are those derived from offsets >= from_offset of
-- the replayed partitions (all of the topic's, or one); the shadow gets every other row.

-- name: replay_lock
SELECT pg_try_advisory_lock(%(lock)s);

-- name: shadow_drop
DROP SCHEMA IF EXISTS {schema} CASCADE;

-- name: shadow_install
SELECT public.ledger_install(%(schema)s);

-- name: shadow_analyze
-- Statistics for the tables a batch reads (payment_states, events_seen): without them the
-- planner takes the growing shadow for tiny and scans it whole on every batch.
ANALYZE {schema}.events, {schema}.transactions, {schema}.entries;

-- name: shadow_copy_accounts
INSERT INTO {schema}.accounts (id, code, merchant_id, currency, normal_side, created_at)
SELECT id, code, merchant_id, currency, normal_side, created_at FROM {live}.accounts;

-- name: shadow_copy_events
INSERT INTO {schema}.events (event_id, type, payment_id, merchant_id, amount, currency,
                             reference, outcome, source_topic, source_partition, source_offset,
                             applied_at)
SELECT event_id, type, payment_id, merchant_id, amount, currency, reference, outcome,
       source_topic, source_partition, source_offset, applied_at
FROM {live}.events
WHERE NOT (source_topic = %(topic)s AND source_offset >= %(from_offset)s
           AND (%(partition)s::int IS NULL OR source_partition = %(partition)s));

-- name: shadow_copy_dead_letters
INSERT INTO {schema}.dead_letters (source_topic, source_partition, source_offset, event_id,
                                   error_type, error, created_at)
SELECT source_topic, source_partition, source_offset, event_id, error_type, error, created_at
FROM {live}.dead_letters
WHERE NOT (source_topic = %(topic)s AND source_offset >= %(from_offset)s
           AND (%(partition)s::int IS NULL OR source_partition = %(partition)s));

-- name: shadow_copy_transactions
INSERT INTO {schema}.transactions (id, kind, payment_id, merchant_id, reference, pending_of,
                                   event_id, source_topic, source_partition, source_offset, seq,
                                   prev_hash, hash, created_at)
SELECT id, kind, payment_id, merchant_id, reference, pending_of, event_id, source_topic,
       source_partition, source_offset, seq, prev_hash, hash, created_at
FROM {live}.transactions
WHERE NOT (source_topic = %(topic)s AND source_offset >= %(from_offset)s
           AND (%(partition)s::int IS NULL OR source_partition = %(partition)s));

-- name: shadow_copy_entries
INSERT INTO {schema}.entries (txn_id, line, account_id, direction, phase, amount, currency,
                              event_id, source_topic, source_partition, source_offset)
SELECT txn_id, line, account_id, direction, phase, amount, currency, event_id, source_topic,
       source_partition, source_offset
FROM {live}.entries
WHERE NOT (source_topic = %(topic)s AND source_offset >= %(from_offset)s
           AND (%(partition)s::int IS NULL OR source_partition = %(partition)s));

-- name: shadow_copy_cursors
-- Replayed partitions start again at from_offset (or where the live ledger stands, if behind);
-- every chain head is the last transaction the shadow kept.
INSERT INTO {schema}.cursors (source_topic, source_partition, next_offset, chain_seq, chain_hash)
SELECT c.source_topic, c.source_partition,
       CASE WHEN c.source_topic = %(topic)s
                 AND (%(partition)s::int IS NULL OR c.source_partition = %(partition)s)
            THEN least(c.next_offset, %(from_offset)s) ELSE c.next_offset END,
       coalesce(h.seq, 0), coalesce(h.hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea)
FROM {live}.cursors c
LEFT JOIN (SELECT DISTINCT ON (source_topic, source_partition)
                  source_topic, source_partition, seq, hash
           FROM {schema}.transactions
           ORDER BY source_topic, source_partition, seq DESC) h
       USING (source_topic, source_partition);

-- name: shadow_diff
-- Balances (on each account's normal side) that the rebuild changes, comparing the live
-- ledger's entries below the shadow's offsets with the shadow's.
WITH limits AS (
    SELECT source_topic, source_partition, next_offset FROM {schema}.cursors
), before AS (
    SELECT e.account_id, e.phase,
           sum(CASE e.direction WHEN 'debit' THEN e.amount ELSE -e.amount END) AS net
    FROM {live}.entries e
    JOIN limits l USING (source_topic, source_partition)
    WHERE e.source_offset < l.next_offset
    GROUP BY e.account_id, e.phase
), after AS (
    SELECT account_id, phase,
           sum(CASE direction WHEN 'debit' THEN amount ELSE -amount END) AS net
    FROM {schema}.entries GROUP BY account_id, phase
), sides AS (
    SELECT id, normal_side FROM {schema}.accounts
    UNION SELECT id, normal_side FROM {live}.accounts
)
SELECT d.account_id, d.phase,
       (CASE s.normal_side WHEN 'debit' THEN d.before_net ELSE -d.before_net END)::bigint,
       (CASE s.normal_side WHEN 'debit' THEN d.after_net ELSE -d.after_net END)::bigint
FROM (SELECT account_id, phase, coalesce(before.net, 0) AS before_net,
             coalesce(after.net, 0) AS after_net
      FROM before FULL JOIN after USING (account_id, phase)) d
JOIN sides s ON s.id = d.account_id
WHERE d.before_net <> d.after_net
ORDER BY d.account_id, d.phase;

-- name: shadow_dead_letters
SELECT source_partition, source_offset, error_type, error
FROM {schema}.dead_letters
WHERE source_topic = %(topic)s AND source_offset >= %(from_offset)s
  AND (%(partition)s::int IS NULL OR source_partition = %(partition)s)
ORDER BY source_partition, source_offset;

-- name: swap_lock
-- Exclusive, until the swap commits.
SELECT pg_advisory_xact_lock(%(lock)s);

-- name: swap_generation
UPDATE {schema}.state
SET generation = (SELECT generation FROM {live}.state) + 1, rebuilt_at = now(),
    rebuilt_from = %(note)s
RETURNING generation;

-- name: swap_drop_previous
DROP SCHEMA IF EXISTS {previous} CASCADE;

-- name: swap_retire_live
ALTER SCHEMA {live} RENAME TO {previous};

-- name: swap_promote_shadow
ALTER SCHEMA {schema} RENAME TO {live};

-- name: swap_reinstall
-- Function bodies name their schema: install both again under their new names.
SELECT public.ledger_install(%(live)s), public.ledger_install(%(previous)s);

-- name: bulk_deferrable_checks
-- The per-row work of a schema that a bulk load can do without until it is complete: its
-- foreign keys, its constraint triggers, and the indexes named in %(unread)s (unique ones as
-- their constraints), each with the DDL that creates it again.
SELECT 'foreign key' AS kind, r.relname, c.conname, pg_get_constraintdef(c.oid)
FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
WHERE c.connamespace = %(schema)s::regnamespace AND c.contype = 'f'
UNION ALL
SELECT 'trigger', r.relname, t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t JOIN pg_class r ON r.oid = t.tgrelid
WHERE r.relnamespace = %(schema)s::regnamespace AND t.tgconstraint <> 0 AND NOT t.tgisinternal
UNION ALL
SELECT CASE WHEN c.oid IS NULL THEN 'index' ELSE 'unique' END, r.relname, i.relname,
       CASE WHEN c.oid IS NULL THEN pg_get_indexdef(i.oid) ELSE pg_get_constraintdef(c.oid) END
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class r ON r.oid = x.indrelid
LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.conrelid = r.oid AND c.contype IN ('p', 'u')
WHERE r.relnamespace = %(schema)s::regnamespace AND i.relname = ANY(%(unread)s::text[])
ORDER BY 1, 2, 3;
