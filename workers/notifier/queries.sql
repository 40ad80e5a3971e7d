-- The notifier's SQL.

-- name: endpoint_insert
-- An endpoint the API announced may come again (a redelivered event): once is enough.
INSERT INTO notifier.endpoints (id, merchant_id, url, enabled_events, updated_at)
VALUES (%(id)s, %(merchant_id)s, %(url)s, %(enabled_events)s, %(at)s)
ON CONFLICT (id) DO NOTHING
RETURNING id;

-- name: endpoint_update
UPDATE notifier.endpoints
SET url = %(url)s, enabled_events = %(enabled_events)s, updated_at = %(at)s
WHERE id = %(id)s AND disabled_reason IS DISTINCT FROM 'deleted'
RETURNING id;

-- name: endpoint_delete
-- For good: its deliveries not yet sent are kept as failed, and it is never enabled again.
WITH deleted AS (
    UPDATE notifier.endpoints
    SET status = 'disabled', disabled_at = coalesce(disabled_at, now()),
        disabled_reason = 'deleted', updated_at = %(at)s
    WHERE id = %(id)s
    RETURNING id
)
UPDATE notifier.deliveries d
SET status = 'failed', leased_until = NULL, last_error = 'endpoint_deleted'
FROM deleted
WHERE d.endpoint_id = deleted.id AND d.status = 'pending'
  AND (d.leased_until IS NULL OR d.leased_until < now());

-- name: secret_insert
INSERT INTO notifier.endpoint_secrets (endpoint_id, secret_key_id, secret_sealed)
VALUES (%(endpoint_id)s, %(key_id)s, %(sealed)s);

-- name: secrets_expire
UPDATE notifier.endpoint_secrets
SET expires_at = least(coalesce(expires_at, 'infinity'), coalesce(%(at)s, now()))
WHERE endpoint_id = %(endpoint_id)s;

-- name: secrets_signing
SELECT endpoint_id, secret_key_id, secret_sealed, secret_plain FROM notifier.endpoint_secrets
WHERE endpoint_id = ANY(%(endpoint_ids)s) AND (expires_at IS NULL OR expires_at > now())
ORDER BY endpoint_id, id DESC;


-- name: secrets_stale
-- Secrets not sealed under the current key (or in plain text), a batch at a time for
-- `flowpay secrets rotate`; locked until the batch is sealed again. Expired ones sign nothing
-- and are left as they are.
SELECT id, endpoint_id, secret_key_id, secret_sealed, secret_plain FROM notifier.endpoint_secrets
WHERE secret_key_id IS DISTINCT FROM %(current)s AND (expires_at IS NULL OR expires_at > now())
ORDER BY id LIMIT %(limit)s
FOR UPDATE;

-- name: secrets_stale_count
SELECT count(*) FROM notifier.endpoint_secrets
WHERE secret_key_id IS DISTINCT FROM %(current)s AND (expires_at IS NULL OR expires_at > now());

-- name: secret_reseal
UPDATE notifier.endpoint_secrets
SET secret_key_id = %(key_id)s, secret_sealed = %(sealed)s, secret_plain = NULL
WHERE id = %(id)s;

-- name: secrets_by_key
-- How many secrets that still sign each key sealed; NULL: stored in plain text.
SELECT secret_key_id, count(*) FROM notifier.endpoint_secrets
WHERE expires_at IS NULL OR expires_at > now()
GROUP BY secret_key_id ORDER BY 1;

-- name: endpoints_list
SELECT id, merchant_id, url, enabled_events, status, created_at, disabled_at, disabled_reason,
       failing_since
FROM notifier.endpoints
WHERE (%(merchant_id)s::text IS NULL OR merchant_id = %(merchant_id)s)
ORDER BY created_at, id;

-- name: endpoint_status
SELECT status FROM notifier.endpoints WHERE id = %(id)s;

-- name: endpoint_disable
-- Its pending deliveries are kept, not sent (`failed`, endpoint_disabled): `webhooks retry`
-- sends them once it is enabled again. Deliveries in flight end their attempt first.
WITH disabled AS (
    UPDATE notifier.endpoints
    SET status = 'disabled', disabled_at = now(), disabled_reason = %(reason)s
    WHERE id = %(id)s AND status = 'enabled'
    RETURNING id
), kept AS (
    UPDATE notifier.deliveries d
    SET status = 'failed', leased_until = NULL, last_error = 'endpoint_disabled'
    FROM disabled
    WHERE d.endpoint_id = disabled.id AND d.status = 'pending'
      AND (d.leased_until IS NULL OR d.leased_until < now())
    RETURNING d.id
)
SELECT (SELECT count(*) FROM disabled) AS disabled, (SELECT count(*) FROM kept) AS kept;

-- name: endpoint_enable
-- A deleted endpoint stays deleted.
UPDATE notifier.endpoints
SET status = 'enabled', disabled_at = NULL, disabled_reason = NULL, failing_since = NULL
WHERE id = %(id)s AND disabled_reason IS DISTINCT FROM 'deleted'
RETURNING id;

-- name: endpoint_failed
-- Whether the endpoint has now failed every attempt for disable_after_s.
UPDATE notifier.endpoints
SET failing_since = coalesce(failing_since, %(started_at)s)
WHERE id = %(id)s
RETURNING status = 'enabled'
      AND failing_since <= now() - make_interval(secs => %(disable_after_s)s);

-- name: deliveries_failed_while_disabled
SELECT count(*), min(created_at) FROM notifier.deliveries
WHERE endpoint_id = %(endpoint_id)s AND status = 'failed' AND last_error = 'endpoint_disabled';

-- name: events_mark_processed
-- Which of a batch's events are new: a redelivered one records nothing twice.
INSERT INTO notifier.processed_events (event_id)
SELECT unnest(%(event_ids)b::uuid[])
ON CONFLICT DO NOTHING
RETURNING event_id;

-- name: payments_get
SELECT payment_id, object FROM notifier.payments WHERE payment_id = ANY(%(payment_ids)s);

-- name: payments_put
INSERT INTO notifier.payments (payment_id, merchant_id, object)
SELECT * FROM unnest(%(payment_ids)b::text[], %(merchant_ids)b::text[], %(objects)b::jsonb[])
ON CONFLICT (payment_id) DO UPDATE SET object = EXCLUDED.object, updated_at = now();

-- name: endpoints_of_merchants
-- These merchants' endpoints, each with its attempts in flight (live leases) in every process;
-- read under deliveries_claim_lock, so that what the intake leases and what claims lease never
-- take an endpoint beyond its share together.
-- Deleted endpoints are sent nothing, and keep nothing either.
SELECT e.id, e.merchant_id, e.url, e.enabled_events, e.status,
       (SELECT count(*) FROM notifier.deliveries d
        WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.leased_until IS NOT NULL
          AND d.leased_until >= now()) AS in_flight
FROM notifier.endpoints e
WHERE e.merchant_id = ANY(%(merchant_ids)s) AND e.disabled_reason IS DISTINCT FROM 'deleted'
ORDER BY e.id;

-- name: deliveries_insert
-- A batch's deliveries, each once per event and endpoint. Those leased here go to this
-- process's sender at once, in memory, as a claim would have given them.
INSERT INTO notifier.deliveries
    (id, endpoint_id, event_id, merchant_id, payment_id, event_type, body, correlation_id,
     traceparent, status, last_error, leased_until)
SELECT id, endpoint_id, event_id, merchant_id, payment_id, event_type, body, correlation_id,
       traceparent, status, last_error,
       CASE WHEN leased THEN now() + make_interval(secs => %(lease_s)s) END
FROM unnest(%(ids)b::text[], %(endpoint_ids)b::text[], %(event_ids)b::uuid[],
            %(merchant_ids)b::text[], %(payment_ids)b::text[], %(event_types)b::text[],
            %(bodies)b::bytea[], %(correlation_ids)b::text[], %(traceparents)b::text[],
            %(statuses)b::text[], %(last_errors)b::text[], %(leased)b::boolean[])
     AS v(id, endpoint_id, event_id, merchant_id, payment_id, event_type, body, correlation_id,
          traceparent, status, last_error, leased)
ON CONFLICT ON CONSTRAINT deliveries_once_per_event_and_endpoint DO NOTHING
RETURNING id;

-- name: deliveries_claim_lock
-- Claims take turns across notifier processes (for the length of a claim's transaction), so
-- that each sees the leases the one before took and no endpoint gets more than its share.
SELECT pg_advisory_xact_lock(hashtext('notifier.deliveries_claim'));

-- name: deliveries_claim
-- A lease, not a lock held across the HTTP call: a sender that dies lets the lease lapse, and
-- the delivery goes again with the same webhook-id. Fair across endpoints: claims go round the
-- endpoints rank by rank (each one's oldest due delivery first, then each one's second, ...),
-- an endpoint's live leases (attempts in flight, in any process) taking its first ranks, and
-- none beyond per_endpoint. The endpoints with pending deliveries are found by skipping through
-- deliveries_due_by_endpoint one endpoint at a time, and only the first few due deliveries of
-- each are read: a claim costs the number of such endpoints, not the length of any backlog.
-- Times are the statement's, not the transaction's: a claim waits its turn (deliveries_claim_lock)
-- behind an intake's transaction, and the deliveries that one recorded, due from its start, are
-- due to this claim; with now() (this transaction's start, before the wait) they were not, and
-- waited for the next claim, up to notifier.poll_interval_s later.
WITH RECURSIVE pending(endpoint_id) AS (
    (SELECT endpoint_id FROM notifier.deliveries WHERE status = 'pending'
     ORDER BY endpoint_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.endpoint_id FROM notifier.deliveries d
            WHERE d.status = 'pending' AND d.endpoint_id > p.endpoint_id
            ORDER BY d.endpoint_id LIMIT 1)
    FROM pending p WHERE p.endpoint_id IS NOT NULL
), leased AS (
    SELECT endpoint_id, count(*) AS n FROM notifier.deliveries
    WHERE status = 'pending' AND leased_until IS NOT NULL AND leased_until >= statement_timestamp()
    GROUP BY endpoint_id
), chosen AS (
    SELECT due.id FROM pending p
    LEFT JOIN leased l ON l.endpoint_id = p.endpoint_id
    CROSS JOIN LATERAL (
        SELECT d.id, d.next_attempt_at,
               coalesce(l.n, 0) + row_number() OVER (ORDER BY d.next_attempt_at, d.id) AS slot
        FROM notifier.deliveries d
        WHERE d.endpoint_id = p.endpoint_id AND d.status = 'pending'
          AND d.next_attempt_at <= statement_timestamp() AND (d.leased_until IS NULL OR d.leased_until < statement_timestamp())
        ORDER BY d.next_attempt_at, d.id
        LIMIT %(per_endpoint)s
    ) due
    WHERE p.endpoint_id IS NOT NULL AND due.slot <= %(per_endpoint)s
    ORDER BY due.slot, due.next_attempt_at, due.id
    LIMIT %(limit)s
), free AS (
    -- A row another sender's round is recording (its lease lapsed while it was sent) is
    -- passed over, never waited for: that round takes this turn after its rows.
    SELECT id FROM notifier.deliveries WHERE id = ANY (ARRAY(SELECT id FROM chosen))
    FOR UPDATE SKIP LOCKED
)
UPDATE notifier.deliveries d
SET leased_until = statement_timestamp() + make_interval(secs => %(lease_s)s)
FROM notifier.endpoints e
WHERE d.id = ANY (ARRAY(SELECT id FROM free)) AND e.id = d.endpoint_id
  AND d.status = 'pending' AND (d.leased_until IS NULL OR d.leased_until < statement_timestamp())
RETURNING d.id, d.endpoint_id, e.url, e.status, d.body, d.attempts,
          d.payment_id, d.event_id::text, d.correlation_id, d.traceparent;

-- name: attempts_insert
INSERT INTO notifier.attempts
    (delivery_id, attempt, started_at, duration_ms, status_code, error, response_head)
SELECT * FROM unnest(%(delivery_ids)b::text[], %(attempts)b::int[], %(started_at)b::timestamptz[],
                     %(durations)b::int[], %(status_codes)b::int[], %(errors)b::text[],
                     %(heads)b::text[]);

-- name: deliveries_delivered
UPDATE notifier.deliveries d
SET status = 'delivered', attempts = d.attempts + 1, delivered_at = now(), leased_until = NULL,
    last_status = v.status_code, last_error = NULL
FROM unnest(%(ids)b::text[], %(status_codes)b::int[]) AS v(id, status_code)
WHERE d.id = v.id AND d.status = 'pending';

-- name: endpoints_succeeded
UPDATE notifier.endpoints SET failing_since = NULL
WHERE id = ANY(%(ids)s) AND failing_since IS NOT NULL;

-- name: delivery_retry
UPDATE notifier.deliveries
SET attempts = attempts + 1, leased_until = NULL, last_status = %(status_code)s,
    last_error = %(error)s, next_attempt_at = now() + make_interval(secs => %(after_s)s)
WHERE id = %(id)s AND status = 'pending';

-- name: delivery_failed
UPDATE notifier.deliveries
SET status = 'failed', attempts = attempts + 1, leased_until = NULL,
    last_status = %(status_code)s, last_error = %(error)s
WHERE id = %(id)s AND status = 'pending';

-- name: delivery_endpoint_disabled
-- Not sent (its endpoint is disabled), so no attempt is counted.
UPDATE notifier.deliveries
SET status = 'failed', leased_until = NULL, last_error = 'endpoint_disabled'
WHERE id = %(id)s AND status = 'pending';

-- name: deliveries_list
SELECT id, merchant_id, payment_id, event_type, endpoint_id, status, attempts, last_status,
       last_error, created_at, delivered_at, next_attempt_at
FROM notifier.deliveries
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(merchant_id)s::text IS NULL OR merchant_id = %(merchant_id)s)
  AND (%(payment_id)s::text IS NULL OR payment_id = %(payment_id)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: attempts_of
SELECT attempt, started_at, duration_ms, status_code, error, response_head
FROM notifier.attempts WHERE delivery_id = %(delivery_id)s ORDER BY id;

-- name: delivery_requeue
-- Only to an enabled endpoint: a disabled one would fail it again at once.
UPDATE notifier.deliveries d
SET status = 'pending', next_attempt_at = now(), leased_until = NULL
FROM notifier.endpoints e
WHERE d.id = %(id)s AND d.status = 'failed' AND e.id = d.endpoint_id AND e.status = 'enabled'
RETURNING d.id;

-- name: delivery_endpoint_of
SELECT d.status, d.endpoint_id, e.status
FROM notifier.deliveries d JOIN notifier.endpoints e ON e.id = d.endpoint_id
WHERE d.id = %(id)s;

-- name: deliveries_requeue_failed
UPDATE notifier.deliveries d
SET status = 'pending', next_attempt_at = now(), leased_until = NULL
FROM notifier.endpoints e
WHERE d.status = 'failed' AND d.created_at >= %(since)s
  AND (%(merchant_id)s::text IS NULL OR d.merchant_id = %(merchant_id)s)
  AND (%(endpoint_id)s::text IS NULL OR d.endpoint_id = %(endpoint_id)s)
  AND e.id = d.endpoint_id AND e.status = 'enabled'
RETURNING d.id;

-- name: deliveries_by_status
-- The deliveries waiting and those that failed, each counted on its partial index (delivered
-- ones are not counted: they only grow, and flowpay_webhook_deliveries_total counts them).
SELECT (SELECT count(*) FROM notifier.deliveries WHERE status = 'pending'),
       (SELECT count(*) FROM notifier.deliveries WHERE status = 'failed');
