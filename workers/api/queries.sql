-- The API service's SQL: merchants, keys, payments, refunds, idempotency, read model.

-- name: merchant_insert
INSERT INTO api.merchants (id, name) VALUES (%(id)s, %(name)s);

-- name: api_key_insert
INSERT INTO api.api_keys (id, merchant_id, key_hash, key_prefix)
VALUES (%(id)s, %(merchant_id)s, %(key_hash)s, %(key_prefix)s);

-- name: api_key_revoke
UPDATE api.api_keys SET revoked_at = now()
WHERE id = %(id)s AND revoked_at IS NULL
RETURNING id, key_prefix, created_at, revoked_at;

-- name: api_keys_list
SELECT id, key_prefix, created_at, revoked_at FROM api.api_keys
WHERE merchant_id = %(merchant_id)s ORDER BY created_at, id;

-- name: merchants_list
SELECT m.id, m.name, m.created_at,
       count(k.id) FILTER (WHERE k.revoked_at IS NULL) AS active_keys
FROM api.merchants m LEFT JOIN api.api_keys k ON k.merchant_id = m.id
GROUP BY m.id ORDER BY m.created_at, m.id;

-- name: api_key_lookup
SELECT merchant_id, key_hash FROM api.api_keys
WHERE key_hash = %(key_hash)s AND revoked_at IS NULL;

-- name: idempotency_begin
-- Takes the key's lock for this transaction (or learns another request holds it) and reads
-- what a finished request with this key answered, in one round trip.
SELECT pg_try_advisory_xact_lock(%(lock)s) AS locked,
       k.request_hash, k.response_status, k.response_body, k.response_location
FROM (SELECT 1) AS one
LEFT JOIN api.idempotency_keys k ON k.merchant_id = %(merchant_id)s AND k.key = %(key)s;

-- name: idempotency_insert
INSERT INTO api.idempotency_keys
    (merchant_id, key, request_hash, response_status, response_body, response_location, completed_at)
VALUES (%(merchant_id)s, %(key)s, %(request_hash)s, %(status)s, %(body)s, %(location)s, now());

-- name: payment_create
-- The whole intake in one statement, one round trip and (in autocommit) its own transaction:
-- take the key's lock, read a finished answer for the key, and only when the lock is ours and
-- there is none, store the intent, the event that creates it and the answer. The read sees
-- the statement's snapshot: a request that committed the key meanwhile makes the key insert
-- fail (unique violation), which rolls back the intent and the event with it.
WITH lock AS MATERIALIZED (
    SELECT pg_try_advisory_xact_lock(%(lock)s) AS locked
), stored AS MATERIALIZED (
    SELECT request_hash, response_status, response_body, response_location
    FROM api.idempotency_keys WHERE merchant_id = %(merchant_id)s AND key = %(key)s
), fresh AS MATERIALIZED (
    SELECT 1 FROM lock WHERE locked AND NOT EXISTS (SELECT 1 FROM stored)
), payment AS (
    INSERT INTO api.payments
        (id, merchant_id, amount, currency, payment_method, description, metadata, created_at,
         updated_at, capture_method, client_secret)
    SELECT %(id)s, %(merchant_id)s, %(amount)s, %(currency)s, %(payment_method)s,
           %(description)s, %(metadata)s, %(created_at)s, %(created_at)s, %(capture_method)s,
           %(client_secret)s
    FROM fresh
    RETURNING id
), event AS (
    INSERT INTO api.outbox (event_id, message_key, value, headers)
    SELECT %(event_id)s, %(message_key)s, %(value)s, %(headers)s FROM payment
), answer AS (
    INSERT INTO api.idempotency_keys
        (merchant_id, key, request_hash, response_status, response_body, response_location,
         completed_at)
    SELECT %(merchant_id)s, %(key)s, %(request_hash)s, %(status)s, %(body)s, %(location)s, now()
    FROM payment
)
SELECT lock.locked, stored.request_hash, stored.response_status, stored.response_body,
       stored.response_location
FROM lock LEFT JOIN stored ON true;

-- name: payment_get
SELECT id, status, amount, currency, payment_method, description, metadata, refunded_amount,
       failure_reason, created_at, updated_at, capture_method, amount_capturable, amount_received,
       cancellation_reason, next_action, client_secret
FROM api.payments WHERE id = %(id)s AND merchant_id = %(merchant_id)s;

-- name: payment_lock
-- The refund check reads what is left under a row lock, so two refunds cannot both pass it.
-- What may be refunded is what was received (a manual capture may have taken less).
SELECT p.status, p.amount_received, p.currency, p.refunded_amount,
       coalesce((SELECT sum(r.amount) FROM api.refunds r
                 WHERE r.payment_id = p.id AND r.status = 'requested'), 0)::bigint AS pending
FROM api.payments p WHERE p.id = %(id)s AND p.merchant_id = %(merchant_id)s
FOR UPDATE;

-- name: payments_list
-- The first page, newest first, read in payments_by_merchant_id's order.
SELECT id, status, amount, currency, payment_method, description, metadata, refunded_amount,
       failure_reason, created_at, updated_at, capture_method, amount_capturable, amount_received,
       cancellation_reason, next_action
FROM api.payments
WHERE merchant_id = %(merchant_id)s
  AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: payments_list_after
-- A later page. Its own statement rather than "cursor IS NULL OR id < cursor" in the first
-- one: a plan made once for any parameters (psycopg prepares what runs often) could not use
-- that for the index, and would read every payment newer than the cursor again.
SELECT id, status, amount, currency, payment_method, description, metadata, refunded_amount,
       failure_reason, created_at, updated_at, capture_method, amount_capturable, amount_received,
       cancellation_reason, next_action
FROM api.payments
WHERE merchant_id = %(merchant_id)s AND id < %(starting_after)s
  AND (%(status)s::text IS NULL OR status = %(status)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: payment_exists
SELECT 1 FROM api.payments WHERE id = %(id)s AND merchant_id = %(merchant_id)s;

-- name: refund_insert
INSERT INTO api.refunds (id, payment_id, amount, reason, created_at, updated_at)
VALUES (%(id)s, %(payment_id)s, %(amount)s, %(reason)s, %(created_at)s, %(created_at)s);

-- name: refund_get
SELECT r.id, r.payment_id, r.amount, r.reason, r.status, r.failure_reason, r.created_at
FROM api.refunds r JOIN api.payments p ON p.id = r.payment_id
WHERE r.id = %(id)s AND p.merchant_id = %(merchant_id)s;

-- name: changes_apply
-- One round of a read-model batch (at most one event per payment) in one statement: the events
-- not seen before are marked processed and applied. Status advances follow the rules given as
-- data (workers.core.projection.STATUS_ADVANCES as (event type, to, from) rows), so status only
-- moves forward and a redelivered or late event changes nothing; a payment that holds an
-- authorization takes no other (projection._authorized_again). Each payment row is updated at
-- most once, so the change trigger numbers and announces each change.
WITH incoming AS (
    SELECT * FROM unnest(%(event_ids)b::uuid[], %(types)b::text[], %(payment_ids)b::text[],
                         %(reasons)b::text[], %(refunded_totals)b::bigint[],
                         %(refund_ids)b::text[], %(refund_statuses)b::text[],
                         %(capturables)b::bigint[], %(captured)b::bigint[],
                         %(cancellations)b::text[], %(next_actions)b::jsonb[],
                         %(at)b::timestamptz[])
        AS e(event_id, type, payment_id, reason, refunded_total, refund_id, refund_status,
             capturable, captured, cancellation, next_action, at)
), fresh AS (
    INSERT INTO api.processed_events (event_id) SELECT event_id FROM incoming
    ON CONFLICT DO NOTHING
    RETURNING event_id
), applied AS (
    SELECT incoming.* FROM incoming JOIN fresh USING (event_id)
), rules AS (
    SELECT * FROM unnest(%(rule_types)b::text[], %(rule_to)b::text[], %(rule_from)b::text[])
        AS r(type, status, from_status)
), advanced AS (
    UPDATE api.payments p
    SET status = r.status, failure_reason = a.reason,
        amount_capturable = CASE WHEN a.type = ANY(%(releasing)b::text[]) THEN 0
                                 ELSE coalesce(a.capturable, p.amount_capturable) END,
        amount_received = CASE WHEN a.type = %(succeeded)s THEN coalesce(a.captured, p.amount)
                               ELSE p.amount_received END,
        cancellation_reason = coalesce(a.cancellation, p.cancellation_reason),
        next_action = a.next_action,
        updated_at = a.at
    FROM applied a JOIN rules r ON r.type = a.type
    WHERE p.id = a.payment_id AND p.status = r.from_status
      AND NOT (a.type = %(authorized)s AND p.amount_capturable > 0)
    RETURNING p.id
), refunded AS (
    UPDATE api.payments p
    SET refunded_amount = greatest(p.refunded_amount, a.refunded_total),
        status = CASE WHEN greatest(p.refunded_amount, a.refunded_total)
                           >= coalesce(nullif(p.amount_received, 0), p.amount)
                      THEN %(refunded_status)s ELSE p.status END,
        updated_at = a.at
    FROM applied a
    WHERE a.refunded_total IS NOT NULL AND p.id = a.payment_id
    RETURNING p.id
), resolved AS (
    UPDATE api.refunds r
    SET status = a.refund_status, failure_reason = a.reason, updated_at = a.at
    FROM applied a
    WHERE a.refund_status IS NOT NULL AND r.id = a.refund_id AND r.status = 'requested'
    RETURNING r.id
)
SELECT (SELECT count(*) FROM fresh), (SELECT count(*) FROM advanced),
       (SELECT count(*) FROM refunded), (SELECT count(*) FROM resolved);

-- name: stream_listen
LISTEN flowpay_payment_changes; LISTEN flowpay_merchant_events;

-- name: stream_head
SELECT version, status FROM api.payments WHERE id = %(id)s AND merchant_id = %(merchant_id)s;

-- name: stream_changes
-- The payment after each change past version %(after)s. Version 1, the payment as created,
-- has no change row: it is built from the payment itself.
SELECT c.version, p.id, c.status, p.amount, p.currency, p.payment_method, p.description,
       p.metadata, c.refunded_amount, c.failure_reason, p.created_at, c.updated_at,
       p.capture_method, c.amount_capturable, c.amount_received, c.cancellation_reason,
       c.next_action, p.client_secret
FROM api.payments p
CROSS JOIN LATERAL (
    SELECT 1 AS version, %(created)s::text AS status, 0::bigint AS refunded_amount,
           NULL::text AS failure_reason, p.created_at AS updated_at,
           0::bigint AS amount_capturable, 0::bigint AS amount_received,
           NULL::text AS cancellation_reason, NULL::jsonb AS next_action
    UNION ALL
    SELECT version, status, refunded_amount, failure_reason, changed_at, amount_capturable,
           amount_received, cancellation_reason, next_action
    FROM api.payment_changes WHERE payment_id = p.id
) c
WHERE p.id = %(id)s AND p.merchant_id = %(merchant_id)s AND c.version > %(after)s
ORDER BY c.version;

-- name: payment_any
SELECT id, merchant_id, status, amount, currency, payment_method, description, metadata,
       refunded_amount, failure_reason, created_at, updated_at, capture_method, amount_capturable,
       amount_received, cancellation_reason, next_action
FROM api.payments WHERE id = %(id)s;

-- name: payment_merchant
SELECT merchant_id FROM api.payments WHERE id = %(id)s;

-- name: refund_any
SELECT id, payment_id, amount, reason, status, failure_reason, created_at, updated_at
FROM api.refunds WHERE id = %(id)s;

-- name: merchant_exists
SELECT 1 FROM api.merchants WHERE id = %(id)s;

-- name: endpoints_lock
-- Held to the end of the transaction that adds an endpoint, so that two added at once cannot
-- both take a merchant's last place. Its own statement: what follows must read after it.
SELECT pg_advisory_xact_lock(%(lock)s);

-- name: endpoints_held
SELECT count(*) FROM api.webhook_endpoints
WHERE merchant_id = %(merchant_id)s AND deleted_at IS NULL;

-- name: endpoint_insert
INSERT INTO api.webhook_endpoints
    (id, merchant_id, url, description, enabled_events, created_at, updated_at)
VALUES (%(id)s, %(merchant_id)s, %(url)s, %(description)s, %(enabled_events)s, %(at)s, %(at)s);

-- name: endpoint_get
-- FOR UPDATE: a change reads the endpoint as it stands and writes it in one transaction.
SELECT id, url, description, enabled_events, status, created_at FROM api.webhook_endpoints
WHERE id = %(id)s AND merchant_id = %(merchant_id)s AND deleted_at IS NULL
FOR UPDATE;

-- name: endpoint_update
UPDATE api.webhook_endpoints
SET url = %(url)s, description = %(description)s, enabled_events = %(enabled_events)s,
    status = %(status)s, updated_at = %(at)s
WHERE id = %(id)s AND merchant_id = %(merchant_id)s AND deleted_at IS NULL;

-- name: endpoint_delete
UPDATE api.webhook_endpoints SET deleted_at = %(at)s, updated_at = %(at)s
WHERE id = %(id)s AND merchant_id = %(merchant_id)s AND deleted_at IS NULL
RETURNING id;

-- name: endpoints_page
-- A merchant's live endpoints, newest first (ids sort by creation), after a cursor if given.
SELECT id, url, description, enabled_events, status, created_at FROM api.webhook_endpoints
WHERE merchant_id = %(merchant_id)s AND deleted_at IS NULL
  AND (%(starting_after)s::text IS NULL OR id < %(starting_after)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: events_record
-- The events of one read-model round, each with its payment as it stands after the round
-- (a round holds at most one event per payment). A redelivered event is recorded once.
INSERT INTO api.events (id, merchant_id, payment_id, type, created_at, data)
SELECT e.id, p.merchant_id, p.id, e.type, e.at,
       jsonb_build_object(
           'id', p.id, 'object', 'payment', 'status', p.status, 'amount', p.amount,
           'currency', p.currency, 'payment_method', p.payment_method,
           'description', p.description, 'metadata', p.metadata,
           'refunded_amount', p.refunded_amount, 'failure_reason', p.failure_reason,
           'capture_method', p.capture_method, 'amount_capturable', p.amount_capturable,
           'amount_received', p.amount_received, 'cancellation_reason', p.cancellation_reason,
           'next_action', p.next_action,
           'created_at', to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           'updated_at', to_char(p.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
FROM unnest(%(event_ids)b::uuid[], %(types)b::text[], %(payment_ids)b::text[],
            %(at)b::timestamptz[]) AS e(id, type, payment_id, at)
JOIN api.payments p ON p.id = e.payment_id
ON CONFLICT (id) DO NOTHING;

-- name: events_prune
DELETE FROM api.events WHERE created_at < now() - make_interval(days => %(days)s);

-- name: event_get
SELECT id, type, created_at, data FROM api.events
WHERE id = %(id)s AND merchant_id = %(merchant_id)s AND created_at >= %(since)s;

-- name: event_cursor
SELECT created_at, id FROM api.events WHERE id = %(id)s AND merchant_id = %(merchant_id)s;

-- name: events_page
-- A merchant's events newest first, after a cursor (created, id) if given, of the types
-- matching a LIKE pattern, since a moment.
SELECT id, type, created_at, data FROM api.events
WHERE merchant_id = %(merchant_id)s AND created_at >= %(since)s
  AND type LIKE %(type)s
  AND (%(after_at)s::timestamptz IS NULL OR (created_at, id) < (%(after_at)s, %(after_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: payment_lock_for_decision
-- A capture or a cancel reads the payment under a row lock, so that of two requests (a
-- capture and a cancel, or two captures) only the first finds it requires_capture.
SELECT status, amount_capturable FROM api.payments
WHERE id = %(id)s AND merchant_id = %(merchant_id)s
FOR UPDATE;

-- name: payment_decision_taken
-- The payment once a capture or cancel is taken: processing it, in the transaction that
-- stages the event asking for it.
UPDATE api.payments
SET status = 'processing', updated_at = %(at)s,
    cancellation_reason = coalesce(%(cancellation_reason)s, cancellation_reason)
WHERE id = %(id)s
RETURNING id, status, amount, currency, payment_method, description, metadata, refunded_amount,
          failure_reason, created_at, updated_at, capture_method, amount_capturable,
          amount_received, cancellation_reason, next_action;

-- name: balance_reserve
-- Take a payout's amount from what the merchant may pay out, only if it is there: the row's
-- lock serialises concurrent payouts, and each re-reads the balance once it has the lock.
UPDATE api.balances SET available = available - %(amount)s, updated_at = now()
WHERE merchant_id = %(merchant_id)s AND currency = %(currency)s AND available >= %(amount)s
RETURNING available;

-- name: balance_available
SELECT available FROM api.balances WHERE merchant_id = %(merchant_id)s AND currency = %(currency)s;

-- name: payout_insert
INSERT INTO api.payouts (id, merchant_id, amount, currency, destination, created_at, updated_at)
VALUES (%(id)s, %(merchant_id)s, %(amount)s, %(currency)s, %(destination)s, %(created_at)s,
        %(created_at)s)
RETURNING id, amount, currency, destination, status, failure_reason, created_at, updated_at;

-- name: payout_get
SELECT id, amount, currency, destination, status, failure_reason, created_at, updated_at
FROM api.payouts WHERE id = %(id)s AND merchant_id = %(merchant_id)s;

-- name: payouts_list
SELECT id, amount, currency, destination, status, failure_reason, created_at, updated_at
FROM api.payouts WHERE merchant_id = %(merchant_id)s
ORDER BY created_at DESC, id DESC LIMIT %(limit)s;

-- name: payouts_list_after
SELECT p.id, p.amount, p.currency, p.destination, p.status, p.failure_reason, p.created_at,
       p.updated_at
FROM api.payouts p, api.payouts a
WHERE a.id = %(starting_after)s AND a.merchant_id = %(merchant_id)s
  AND p.merchant_id = %(merchant_id)s AND (p.created_at, p.id) < (a.created_at, a.id)
ORDER BY p.created_at DESC, p.id DESC LIMIT %(limit)s;

-- name: payout_exists
SELECT 1 FROM api.payouts WHERE id = %(id)s AND merchant_id = %(merchant_id)s;

-- name: balance_of
-- Per currency: what the merchant may pay out, and what its payments still in flight will bring
-- (pending: created or authorized, not yet captured or settled).
WITH available AS (
    SELECT currency, available FROM api.balances WHERE merchant_id = %(merchant_id)s
), pending AS (
    SELECT currency, sum(amount)::bigint AS pending FROM api.payments
    WHERE merchant_id = %(merchant_id)s
      AND status IN ('initiated', 'processing', 'requires_action', 'requires_capture')
    GROUP BY currency
)
SELECT currency, coalesce(a.available, 0), coalesce(p.pending, 0)
FROM available a FULL JOIN pending p USING (currency)
ORDER BY currency;

-- name: balance_credit
-- A round's captures (+) and refunds (-) into the merchants' balances, each event once; an
-- amount of NULL is the payment's whole amount (an automatic charge).
WITH given AS (
    SELECT * FROM unnest(%(event_ids)b::uuid[], %(payment_ids)b::text[],
                         %(amounts)b::bigint[], %(signs)b::int[])
                  AS g(event_id, payment_id, amount, sign)
), fresh AS (
    INSERT INTO api.balance_events (event_id) SELECT event_id FROM given
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), deltas AS (
    SELECT p.merchant_id, p.currency, sum(g.sign * coalesce(g.amount, p.amount))::bigint AS delta
    FROM given g JOIN fresh USING (event_id) JOIN api.payments p ON p.id = g.payment_id
    GROUP BY p.merchant_id, p.currency
)
INSERT INTO api.balances AS b (merchant_id, currency, available)
SELECT merchant_id, currency, delta FROM deltas
ON CONFLICT (merchant_id, currency)
DO UPDATE SET available = b.available + excluded.available, updated_at = now();

-- name: payouts_settle
-- A round's payout.paid and payout.failed, each once: the payout takes its outcome, and a
-- failed one's amount goes back to what the merchant may pay out (the saga's compensation).
WITH given AS (
    SELECT * FROM unnest(%(event_ids)b::uuid[], %(payout_ids)b::text[], %(statuses)b::text[],
                         %(reasons)b::text[])
                  AS g(event_id, payout_id, status, reason)
), fresh AS (
    INSERT INTO api.balance_events (event_id) SELECT event_id FROM given
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), settled AS (
    UPDATE api.payouts p
    SET status = g.status, failure_reason = g.reason, updated_at = now()
    FROM given g JOIN fresh USING (event_id)
    WHERE p.id = g.payout_id AND p.status = 'pending'
    RETURNING p.merchant_id, p.currency, p.amount, p.status
), returned AS (
    SELECT merchant_id, currency, sum(amount)::bigint AS amount FROM settled
    WHERE status = 'failed' GROUP BY merchant_id, currency
)
UPDATE api.balances b SET available = b.available + r.amount, updated_at = now()
FROM returned r WHERE b.merchant_id = r.merchant_id AND b.currency = r.currency;

-- name: event_stream_horizon
-- Where a stream that resumes nothing starts: events of transactions still running or to come.
SELECT pg_snapshot_xmin(pg_current_snapshot())::text;

-- name: event_stream_cursor
SELECT tx::text, seq FROM api.events WHERE id = %(id)s AND merchant_id = %(merchant_id)s;

-- name: event_stream_next
-- A merchant's events after a cursor, in commit order, of the types matching a LIKE pattern.
-- settled: its transaction is older than every one still running, so no event can still
-- appear before it (a stream stops at the first that is not).
SELECT e.tx::text AS tx, e.seq, e.id, e.type, e.created_at, e.data,
       e.tx < pg_snapshot_xmin(pg_current_snapshot()) AS settled
FROM api.events e
WHERE e.merchant_id = %(merchant_id)s AND (e.tx, e.seq) > (%(tx)s::xid8, %(seq)s::bigint)
  AND e.type LIKE %(type)s
ORDER BY e.tx, e.seq
LIMIT %(limit)s;

-- name: client_secret_access
-- What a browser's client secret is checked against: the payment's own, and the origins its
-- merchant allows.
SELECT p.merchant_id, p.client_secret, m.allowed_origins
FROM api.payments p JOIN api.merchants m ON m.id = p.merchant_id
WHERE p.id = %(id)s;

-- name: merchant_origins
SELECT allowed_origins FROM api.merchants WHERE id = %(id)s;

-- name: merchant_origins_set
UPDATE api.merchants SET allowed_origins = %(origins)s WHERE id = %(id)s
RETURNING allowed_origins;
