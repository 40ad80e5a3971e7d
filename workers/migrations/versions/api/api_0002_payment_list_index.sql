-- api 0002: GET /v1/payments pages by (merchant_id, id); the index in (merchant_id, created_at,
-- id) that no query used gives way to it. CREATE INDEX (not CONCURRENTLY: a migration runs in
-- one transaction) blocks writes to api.payments while it builds.

DROP INDEX api.payments_by_merchant;
CREATE INDEX payments_by_merchant_id ON api.payments (merchant_id, id);
