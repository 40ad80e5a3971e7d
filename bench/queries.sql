-- The benchmark's own read-only queries over FlowPay's schemas.

-- name: completed_in_window
-- Payments accepted in [t0, t1) that are completed: the ledger posted their success and their
-- webhook was delivered. Seconds from acceptance to completion, and when that was.
SELECT extract(epoch FROM greatest(l.applied_at, d.delivered_at) - p.created_at)::float8 AS seconds,
       greatest(l.applied_at, d.delivered_at) AS completed_at
FROM api.payments p
JOIN ledger.events l ON l.payment_id = p.id AND l.type = 'payment.succeeded'
JOIN notifier.deliveries d ON d.payment_id = p.id AND d.event_type = 'payment.succeeded'
     AND d.status = 'delivered'
WHERE p.created_at >= %(t0)s AND p.created_at < %(t1)s;

-- name: accepted_in_window
SELECT count(*), min(created_at) FROM api.payments WHERE created_at >= %(t0)s AND created_at < %(t1)s;

-- name: commits
SELECT xact_commit FROM pg_stat_database WHERE datname = current_database();

-- name: now
SELECT clock_timestamp();

-- name: settled
SELECT count(*) FROM processor.payments WHERE state IN ('succeeded', 'failed');

-- name: settled_span
SELECT count(*), extract(epoch FROM max(updated_at) - min(updated_at))::float8
FROM processor.payments WHERE state IN ('succeeded', 'failed');

-- name: analyze_stages
-- Fresh statistics first: autovacuum may not yet have seen the point's rows, so the planner
-- would estimate about one payment in the window and nest seq scans of both outboxes.
ANALYZE api.payments, api.outbox, orchestrator.events, orchestrator.outbox, processor.payments,
        processor.outbox, ledger.events, notifier.deliveries;

-- name: stages_in_window
-- Where each completed payment's time went, in seconds after its acceptance: its event leaves
-- the API's outbox, the orchestrator hears it and its charge command leaves the orchestrator's
-- outbox, the processor first sees it (its row), settles it, its success event leaves the
-- processor's outbox, the ledger posts it, the notifier records and delivers it.
SELECT extract(epoch FROM ao.published_at - p.created_at)::float8 AS api_event_published,
       extract(epoch FROM oe.received_at - p.created_at)::float8 AS orchestrator_received,
       extract(epoch FROM oc.published_at - p.created_at)::float8 AS command_published,
       extract(epoch FROM pp.created_at - p.created_at)::float8 AS processor_received,
       extract(epoch FROM pp.updated_at - p.created_at)::float8 AS processor_settled,
       extract(epoch FROM po.published_at - p.created_at)::float8 AS success_event_published,
       extract(epoch FROM l.applied_at - p.created_at)::float8 AS ledger_posted,
       extract(epoch FROM d.created_at - p.created_at)::float8 AS webhook_recorded,
       extract(epoch FROM d.delivered_at - p.created_at)::float8 AS webhook_delivered
FROM api.payments p
JOIN api.outbox ao ON ao.message_key = convert_to(p.id, 'UTF8')
JOIN (SELECT subject, min(received_at) AS received_at FROM orchestrator.events GROUP BY subject)
     oe ON oe.subject = p.id
JOIN (SELECT message_key, min(published_at) AS published_at FROM orchestrator.outbox
      GROUP BY message_key) oc ON oc.message_key = convert_to(p.id, 'UTF8')
JOIN processor.payments pp ON pp.payment_id = p.id
JOIN processor.outbox po ON po.message_key = convert_to(p.id, 'UTF8')
     AND convert_from(po.value, 'UTF8')::jsonb ->> 'type' = 'payment.succeeded'
JOIN ledger.events l ON l.payment_id = p.id AND l.type = 'payment.succeeded'
JOIN notifier.deliveries d ON d.payment_id = p.id AND d.event_type = 'payment.succeeded'
     AND d.status = 'delivered'
WHERE p.created_at >= %(t0)s AND p.created_at < %(t1)s;
