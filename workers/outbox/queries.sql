-- The outbox relay's SQL. {schema} is an emitting service's schema (workers.core.outbox).

-- name: try_lock
-- One relay at a time per schema: two relays taking alternate batches would reorder a payment.
SELECT pg_try_advisory_xact_lock(%s);

-- name: waiting
-- Whether {schema}'s outbox has a row to publish (on its partial index): one column per
-- schema of one SELECT (store.waiting), so that a round with nothing to do costs one statement.
EXISTS (SELECT 1 FROM {schema}.outbox WHERE published_at IS NULL)

-- name: claim_batch
-- No row locks: the caller holds the schema's relay lock (try_lock), so no other relay reads
-- these rows until its transaction ends, and nothing else changes unpublished rows.
SELECT id, message_key, value, headers
FROM {schema}.outbox
WHERE published_at IS NULL
ORDER BY id
LIMIT %s;

-- name: mark_published
UPDATE {schema}.outbox SET published_at = now() WHERE id = ANY(%s);

-- name: prune_outbox
DELETE FROM {schema}.outbox
WHERE published_at < now() - make_interval(secs => %s);

-- name: prune_idempotency_keys
-- Only completed keys: an in-flight one still guards a request that has not answered yet.
DELETE FROM api.idempotency_keys
WHERE created_at < now() - make_interval(secs => %s)
  AND response_status IS NOT NULL;

-- name: backlog
-- For metrics: rows waiting to be published, and how long the oldest has waited.
SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8
FROM {schema}.outbox
WHERE published_at IS NULL;
