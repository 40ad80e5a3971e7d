-- Shared SQL. {schema} is the emitting service's own schema.

-- name: outbox_insert
INSERT INTO {schema}.outbox (event_id, message_key, value, headers)
VALUES (%s, %s, %s, %s)
ON CONFLICT (event_id) DO NOTHING;

-- name: outbox_insert_rows
-- Many events in one statement, in the order given (each event once, as above).
INSERT INTO {schema}.outbox (event_id, message_key, value, headers)
SELECT * FROM unnest(%(event_ids)s::uuid[], %(keys)s::bytea[], %(values)s::bytea[],
                     %(headers)s::jsonb[])
ON CONFLICT (event_id) DO NOTHING;

-- name: outbox_events_of
SELECT value, published_at FROM {schema}.outbox WHERE message_key = %s ORDER BY id;

-- name: dlq_replays_of
SELECT count(*) FROM ops.dlq_replays WHERE topic = %(topic)s AND dead_letter = %(dead_letter)s;

-- name: dlq_replay_insert
INSERT INTO ops.dlq_replays (dead_letter, topic, forced) VALUES (%(dead_letter)s, %(topic)s, %(forced)s);
