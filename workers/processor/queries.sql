-- The processor's SQL. Every state change is `UPDATE ... WHERE state = <expected>`.

-- name: payment_insert
-- A payment is recorded once, already moved to processing; a redelivery inserts nothing.
INSERT INTO processor.payments
    (payment_id, merchant_id, amount, currency, payment_method, correlation_id, state, traceparent)
VALUES (%(payment_id)s, %(merchant_id)s, %(amount)s, %(currency)s, %(payment_method)s,
        %(correlation_id)s, %(state)s, %(traceparent)s)
ON CONFLICT (payment_id) DO NOTHING;

-- name: payments_start
-- A batch's payments, each recorded once, already moved to processing, in one statement: the
-- rows this statement inserted (started: their payment.processing is staged with them), and
-- the rows of payments recorded before (a redelivery), as they stand. A payment another
-- transaction inserts meanwhile is in neither (this statement's snapshot predates it).
WITH given AS (
    SELECT * FROM unnest(%(payment_ids)b::text[], %(merchant_ids)b::text[],
                         %(amounts)b::bigint[], %(currencies)b::text[], %(methods)b::text[],
                         %(correlation_ids)b::text[], %(traceparents)b::text[])
                  AS g(payment_id, merchant_id, amount, currency, payment_method,
                       correlation_id, traceparent)
), started AS (
    INSERT INTO processor.payments
        (payment_id, merchant_id, amount, currency, payment_method, correlation_id, state,
         traceparent)
    SELECT payment_id, merchant_id, amount, currency, payment_method, correlation_id,
           %(state)s, traceparent
    FROM given
    ON CONFLICT (payment_id) DO NOTHING
    RETURNING payment_id, merchant_id, amount, currency, payment_method, correlation_id, state,
              charge_id, failure_reason, refunded_amount, next_check_at, checks,
              reversed_charge_id, created_at, updated_at, traceparent, settled_at
)
SELECT *, true AS started FROM started
UNION ALL
SELECT payment_id, merchant_id, amount, currency, payment_method, correlation_id, state,
       charge_id, failure_reason, refunded_amount, next_check_at, checks, reversed_charge_id,
       created_at, updated_at, traceparent, settled_at, false
FROM processor.payments WHERE payment_id IN (SELECT payment_id FROM given);

-- name: payment_get
SELECT payment_id, merchant_id, amount, currency, payment_method, correlation_id, state,
       charge_id, failure_reason, refunded_amount, next_check_at, checks, reversed_charge_id,
       created_at, updated_at, traceparent, settled_at, amount_received, capture_method
FROM processor.payments WHERE payment_id = %(payment_id)s;

-- name: payment_settle
-- processing -> succeeded | failed, once; the reconciler lets go of it at the same time.
UPDATE processor.payments
SET state = %(state)s, charge_id = %(charge_id)s, failure_reason = %(failure_reason)s,
    next_check_at = %(next_check_at)s, settled_at = now(), updated_at = now()
WHERE payment_id = %(payment_id)s AND state = 'processing';

-- name: payments_settle
-- Many payments from the state each was found in (processing, requires_action) to its new one
-- (succeeded, failed, requires_action), each once, in one statement; RETURNING the ones it
-- moved (their events are staged with them). settled_at: when it left processing (a
-- requires_action payment's wait is measured from it).
UPDATE processor.payments p
SET state = v.state, charge_id = coalesce(v.charge_id, p.charge_id),
    failure_reason = v.failure_reason, next_check_at = v.next_check_at, settled_at = now(),
    updated_at = now()
FROM unnest(%(payment_ids)b::text[], %(from_states)b::text[], %(states)b::text[],
            %(charge_ids)b::text[], %(reasons)b::text[], %(next_checks)b::timestamptz[])
     AS v(payment_id, from_state, state, charge_id, failure_reason, next_check_at)
WHERE p.payment_id = v.payment_id AND p.state = v.from_state
RETURNING p.payment_id;

-- name: payments_defer
-- Many payments not settled yet, to the reconciler, in one statement (a NULL delay: no more
-- checks, the gateway's report settles it); the gateway's charge id kept once known.
UPDATE processor.payments p
SET next_check_at = now() + make_interval(secs => v.after_s), checks = p.checks + v.counted,
    charge_id = coalesce(v.charge_id, p.charge_id), updated_at = now()
FROM unnest(%(payment_ids)b::text[], %(states)b::text[], %(after_s)b::float8[],
            %(charge_ids)b::text[], %(counted)b::int[])
     AS v(payment_id, state, after_s, charge_id, counted)
WHERE p.payment_id = v.payment_id AND p.state = v.state;

-- name: payment_defer
-- The outcome is unknown: hand the payment to the reconciler.
UPDATE processor.payments
SET next_check_at = now() + make_interval(secs => %(after_s)s), checks = checks + %(counted)s,
    updated_at = now()
WHERE payment_id = %(payment_id)s AND state = %(state)s;

-- name: payment_release
UPDATE processor.payments SET next_check_at = NULL, updated_at = now()
WHERE payment_id = %(payment_id)s;

-- name: payment_reversed
UPDATE processor.payments
SET reversed_charge_id = %(charge_id)s, next_check_at = NULL, updated_at = now()
WHERE payment_id = %(payment_id)s AND state = 'failed' AND reversed_charge_id IS NULL;

-- name: refund_get
SELECT refund_id, payment_id, amount, status, gateway_refund_id, failure_reason,
       next_check_at, checks
FROM processor.refunds WHERE refund_id = %(refund_id)s;

-- name: refund_insert
INSERT INTO processor.refunds (refund_id, payment_id, amount, status, failure_reason)
VALUES (%(refund_id)s, %(payment_id)s, %(amount)s, %(status)s, %(failure_reason)s)
ON CONFLICT (refund_id) DO NOTHING;

-- name: refund_settle
-- requested -> succeeded | failed, once; the reconciler lets go of it at the same time.
UPDATE processor.refunds
SET status = %(status)s, gateway_refund_id = %(gateway_refund_id)s,
    failure_reason = %(failure_reason)s, next_check_at = NULL, updated_at = now()
WHERE refund_id = %(refund_id)s AND status = 'requested';

-- name: refund_defer
-- The refund's outcome is unknown: hand it to the reconciler.
UPDATE processor.refunds
SET next_check_at = now() + make_interval(secs => %(after_s)s), checks = checks + 1,
    updated_at = now()
WHERE refund_id = %(refund_id)s AND status = 'requested';

-- name: refunds_recheck_now
-- The gateway reported a refund of the payment: its refunds whose outcome is unknown (the
-- reconciler's) are looked at on its next pass.
UPDATE processor.refunds SET next_check_at = now(), updated_at = now()
WHERE payment_id = %(payment_id)s AND status = 'requested' AND next_check_at > now();

-- name: payment_refundable
-- What is left to refund: refunds still requested count as made (their outcome may be known
-- only later), as the API counts them. One statement, so a refund settling meanwhile is
-- counted once, either as requested or as refunded.
SELECT coalesce(p.amount_received, p.amount) - p.refunded_amount - coalesce(
           (SELECT sum(r.amount) FROM processor.refunds r
            WHERE r.payment_id = p.payment_id AND r.status = 'requested'), 0)
FROM processor.payments p WHERE p.payment_id = %(payment_id)s;

-- name: payment_lock_refunds
-- The payment's refund figures under a row lock, for the refund being settled in the same
-- transaction: two refunds settling at once each see the other's. What may be refunded is what
-- was received (a partial capture took less than the amount).
SELECT state, coalesce(amount_received, amount), refunded_amount FROM processor.payments
WHERE payment_id = %(payment_id)s FOR UPDATE;

-- name: payment_refunded
UPDATE processor.payments
SET refunded_amount = refunded_amount + %(amount)s, state = %(state)s, updated_at = now()
WHERE payment_id = %(payment_id)s AND state = 'succeeded'
RETURNING refunded_amount;

-- name: attempt_insert
INSERT INTO processor.attempts (payment_id, kind, outcome, detail, duration_ms)
VALUES (%(payment_id)s, %(kind)s, %(outcome)s, %(detail)s, %(duration_ms)s);

-- name: attempts_insert
-- A group of gateway calls, recorded with the settlements they led to.
INSERT INTO processor.attempts (payment_id, kind, outcome, detail, duration_ms)
SELECT * FROM unnest(%(payment_ids)b::text[], %(kinds)b::text[], %(outcomes)b::text[],
                     %(details)b::text[], %(durations)b::int[]);

-- name: attempts_of
SELECT kind, outcome, detail, duration_ms, created_at
FROM processor.attempts WHERE payment_id = %(payment_id)s ORDER BY id;

-- name: reconciler_backlog
-- For metrics: payments the reconciler watches (processing: outcome unknown or pending at the
-- gateway; requires_action: waiting for the customer; failed: a late charge may still land),
-- and how many of them are due now.
SELECT state, count(*), count(*) FILTER (WHERE next_check_at <= now())
FROM processor.payments
WHERE next_check_at IS NOT NULL
GROUP BY state;

-- name: refunds_backlog
-- For metrics: refunds whose outcome is unknown, and how many of them are due now.
SELECT count(*), count(*) FILTER (WHERE next_check_at <= now())
FROM processor.refunds
WHERE next_check_at IS NOT NULL;

-- name: command_seen
SELECT 1 FROM processor.commands WHERE command_id = %(command_id)s;

-- name: payout_insert
-- A payout sent through the gateway, once; nothing inserted: sent before. One in transit is
-- the reconciler's to look up (first at once: it looks again on the re-check schedule).
INSERT INTO processor.payouts
    (payout_id, merchant_id, amount, currency, status, gateway_payout_id, failure,
     correlation_id, next_check_at, settled_at)
VALUES (%(payout_id)s, %(merchant_id)s, %(amount)s, %(currency)s, %(status)s,
        %(gateway_payout_id)s, %(failure)s, %(correlation_id)s,
        CASE WHEN %(status)s::text = 'in_transit' THEN now() END,
        CASE WHEN %(status)s::text <> 'in_transit' THEN now() END)
ON CONFLICT (payout_id) DO NOTHING;

-- name: payout_get
SELECT payout_id, merchant_id, amount, currency, status, gateway_payout_id, failure,
       correlation_id, checks, next_check_at
FROM processor.payouts WHERE payout_id = %(payout_id)s;

-- name: payout_land
-- A payout in transit, paid or failed at the gateway: once, whoever tells it first (its
-- report, the reconciler's look-up); the reconciler lets go of it at the same time.
UPDATE processor.payouts
SET status = %(status)s, failure = %(failure)s, next_check_at = NULL, settled_at = now()
WHERE payout_id = %(payout_id)s AND status = 'in_transit'
RETURNING payout_id, merchant_id, amount, currency, status, gateway_payout_id, failure,
          correlation_id, checks;

-- name: payout_defer
-- A payout still in transit, looked up again after after_s (NULL: no more look-ups, the
-- gateway's report settles it).
UPDATE processor.payouts
SET next_check_at = now() + make_interval(secs => %(after_s)s::float8), checks = checks + 1
WHERE payout_id = %(payout_id)s AND status = 'in_transit';

-- name: due_claim
-- Claims the rows of a table the reconciler watches (payments, refunds, payouts; the table and
-- its key are named by the caller) whose check is due, each with a lease so that one
-- reconciler handles it.
UPDATE processor.{table} t
SET next_check_at = now() + make_interval(secs => %(lease_s)s)
FROM (SELECT {key} FROM processor.{table}
      WHERE next_check_at <= now()
      ORDER BY next_check_at LIMIT %(limit)s
      FOR UPDATE SKIP LOCKED) due
WHERE t.{key} = due.{key}
RETURNING t.{key};

-- name: command_record
-- An executed command, in the transaction of its effects; nothing inserted: a redelivery.
INSERT INTO processor.commands (command_id, payment_id, type)
VALUES (%(command_id)s, %(payment_id)s, %(type)s)
ON CONFLICT (command_id) DO NOTHING;

-- name: payment_authorized
-- A manual payment, recorded once with its authorization's outcome (requires_capture, failed,
-- or requires_action: the customer must authenticate, and the reconciler looks it up from now
-- on, as an automatic payment's wait).
INSERT INTO processor.payments
    (payment_id, merchant_id, amount, currency, payment_method, correlation_id, state,
     charge_id, failure_reason, settled_at, capture_method, next_check_at)
VALUES (%(payment_id)s, %(merchant_id)s, %(amount)s, %(currency)s, %(payment_method)s,
        %(correlation_id)s, %(state)s, %(charge_id)s, %(failure_reason)s, now(), 'manual',
        CASE WHEN %(state)s::text = 'requires_action' THEN now() END)
ON CONFLICT (payment_id) DO NOTHING;

-- name: payment_move
-- A manual payment's capture or void, once: from the state it was in when the call was made.
-- A capture takes its charge id and the amount captured (the rest was released); the amount
-- the payment was made for stays, as Stripe keeps ``amount`` beside ``amount_received``.
UPDATE processor.payments
SET state = %(state)s, charge_id = coalesce(%(charge_id)s, charge_id),
    amount_received = coalesce(%(amount_received)s, amount_received),
    failure_reason = %(failure_reason)s,
    settled_at = now(), updated_at = now()
WHERE payment_id = %(payment_id)s AND state = %(from_state)s;
