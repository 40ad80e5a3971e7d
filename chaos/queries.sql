-- The scenario's reads of FlowPay's schemas: to know when it has settled, and to check it after.

-- name: unsettled_payments
SELECT count(*) FROM api.payments WHERE status <> ALL (%(terminal)s::text[]);

-- name: unsettled_refunds
SELECT count(*) FROM api.refunds WHERE status = 'requested';

-- name: unpublished
SELECT (SELECT count(*) FROM api.outbox WHERE published_at IS NULL)
     + (SELECT count(*) FROM processor.outbox WHERE published_at IS NULL)
     + (SELECT count(*) FROM orchestrator.outbox WHERE published_at IS NULL);

-- name: unsettled_payouts
SELECT count(*) FROM api.payouts WHERE status = 'pending';

-- name: pending_deliveries
SELECT count(*) FROM notifier.deliveries WHERE status = 'pending';

-- name: ledger_cursors
SELECT source_partition, next_offset FROM ledger.cursors WHERE source_topic = %(topic)s;

-- name: ledger_saw_terminal
SELECT 1 FROM ledger.events WHERE payment_id = %(payment_id)s AND type = %(type)s;


-- name: stuck_refunds
SELECT id, payment_id FROM api.refunds WHERE status = 'requested' ORDER BY created_at;

-- name: read_model_events
-- A payout's outcome is recorded where the balance counts it, not with the payments' events.
SELECT event_id FROM api.processed_events
UNION
SELECT event_id FROM api.balance_events;

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

-- name: merchant_journal
-- Every entry on a merchant's account, with its source event (the checks order them by when
-- that happened) and whether its transaction is a payout's (its other side payouts_in_transit):
-- a payout's pending entries are its reservation and their release, a payment's its incoming
-- amount while it is in flight.
SELECT a.merchant_id, a.currency, e.event_id, e.direction, e.phase, e.amount,
       EXISTS (SELECT 1 FROM ledger.entries o JOIN ledger.accounts oa ON oa.id = o.account_id
               WHERE o.txn_id = e.txn_id AND oa.code = 'payouts_in_transit') AS payout
FROM ledger.entries e JOIN ledger.accounts a ON a.id = e.account_id
WHERE a.code = 'merchant_payable'
ORDER BY e.source_topic, e.source_partition, e.source_offset, e.txn_id, e.line;
