-- The scenario's reads of FlowPay's schemas: to know when it has settled, and to check it after.

-- name: unsettled_payments
SELECT count(*) FROM api.payments WHERE status <> ALL (%(terminal)s::text[]);

-- name: unsettled_refunds
SELECT count(*) FROM api.refunds WHERE status = 'requested';

-- name: unpublished
SELECT (SELECT count(*) FROM api.outbox WHERE published_at IS NULL)
     + (SELECT count(*) FROM processor.outbox WHERE published_at IS NULL)
     + (SELECT count(*) FROM orchestrator.outbox WHERE published_at IS NULL);

-- name: pending_deliveries
SELECT count(*) FROM notifier.deliveries WHERE status = 'pending';

-- name: ledger_cursors
SELECT source_partition, next_offset FROM ledger.cursors WHERE source_topic = %(topic)s;

-- name: ledger_saw_terminal
SELECT 1 FROM ledger.events WHERE payment_id = %(payment_id)s AND type = %(type)s;


-- name: stuck_refunds
SELECT id, payment_id FROM api.refunds WHERE status = 'requested' ORDER BY created_at;

-- name: read_model_events
SELECT event_id FROM api.processed_events;

-- name: ledger_events
SELECT event_id FROM ledger.events;

-- name: notifier_events
SELECT event_id FROM notifier.processed_events;

-- name: ledger_dead_letters
SELECT source_partition, source_offset, error FROM ledger.dead_letters;

-- name: failed_deliveries
SELECT id, event_type, payment_id, last_status, last_error FROM notifier.deliveries
WHERE status = 'failed';

-- name: failed_payments
SELECT id FROM api.payments WHERE status = 'failed';

-- name: acknowledged_events
-- Events the relays marked published: Kafka acknowledged each (acks=all) before the mark.
SELECT event_id FROM api.outbox WHERE published_at IS NOT NULL
UNION ALL
SELECT event_id FROM processor.outbox WHERE published_at IS NOT NULL;

-- name: unfinished_sagas
-- Sagas neither ended nor waiting on a timer of their own: nothing would ever move them on.
SELECT s.id, s.type, s.state, s.step FROM orchestrator.sagas s
WHERE s.state NOT IN ('done', 'failed')
  AND NOT EXISTS (SELECT 1 FROM orchestrator.timers t WHERE t.saga_id = s.id AND t.status = 'armed')
ORDER BY s.created_at;
