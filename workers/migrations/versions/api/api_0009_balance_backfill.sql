-- api 0009: the balance projection (api 0006) filled from what the API already holds.
--
-- api 0006 installed api.balances empty, and the read model credits it only with the captures
-- and refunds it hears from then on: a merchant paid before the upgrade showed no balance and
-- had every payout refused. Each merchant and currency gets what its succeeded payments took
-- (a partial capture's amount_received; the amount for a payment made before amount_received
-- was kept) less their refunds, less its payouts in transit or paid: the read model's own rule
-- over the API's whole history. A row the read model made after api 0006 is recomputed too: it
-- lacks the payments made before.
--
-- The succeeded and refunded events of those payments are marked counted
-- (api.balance_events): one the read model applied before the upgrade but had not yet
-- committed its offset for is delivered again, and must not be credited a second time.
WITH held AS (
    SELECT merchant_id, currency,
           coalesce(nullif(amount_received, 0), amount) - refunded_amount AS amount
    FROM api.payments WHERE status IN ('succeeded', 'refunded')
    UNION ALL
    SELECT merchant_id, currency, -amount FROM api.payouts WHERE status IN ('pending', 'paid')
), filled AS (
    INSERT INTO api.balances (merchant_id, currency, available)
    SELECT h.merchant_id, h.currency, sum(h.amount)::bigint FROM held h
    GROUP BY h.merchant_id, h.currency
    ON CONFLICT (merchant_id, currency)
        DO UPDATE SET available = EXCLUDED.available, updated_at = now()
    RETURNING merchant_id, currency
)
INSERT INTO api.balance_events (event_id)
SELECT e.id FROM api.events e
JOIN api.payments p ON p.id = e.payment_id
JOIN filled f ON f.merchant_id = p.merchant_id AND f.currency = p.currency
WHERE e.type IN ('payment.succeeded', 'payment.refunded')
ON CONFLICT (event_id) DO NOTHING;
