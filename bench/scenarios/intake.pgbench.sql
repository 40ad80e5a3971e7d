-- pgbench script: the transaction POST /v1/payments commits (workers/api/idempotency.py,
-- payments.py, queries.sql), with its values bound from pgbench variables (-M prepared):
-- the idempotency lock and look-up, the payment intent, its outbox row, the stored answer.
\set r random(1, 9000000000000000000)
BEGIN;
SELECT pg_try_advisory_xact_lock(:r) AS locked,
       k.request_hash, k.response_status, k.response_body, k.response_location
FROM (SELECT 1) AS one
LEFT JOIN api.idempotency_keys k ON k.merchant_id = :merchant AND k.key = 'k' || :r::text;
INSERT INTO api.payments
    (id, merchant_id, amount, currency, payment_method, description, metadata, created_at, updated_at)
VALUES ('pay_' || :r::text, :merchant, 1999, 'USD', 'pm_card_visa', NULL, '{}'::jsonb, now(), now());
INSERT INTO api.outbox (event_id, message_key, value, headers)
VALUES (gen_random_uuid(), convert_to('pay_' || :r::text, 'UTF8'), decode(:value, 'hex'), :headers::jsonb)
ON CONFLICT (event_id) DO NOTHING;
INSERT INTO api.idempotency_keys
    (merchant_id, key, request_hash, response_status, response_body, response_location, completed_at)
VALUES (:merchant, 'k' || :r::text, sha256(convert_to(:r::text, 'UTF8')), 202, decode(:body, 'hex'),
        '/v1/payments/pay_' || :r::text, now());
END;
