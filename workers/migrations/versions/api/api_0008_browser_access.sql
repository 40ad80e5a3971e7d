-- api 0006: browsers follow a payment's status (issue 16, client secrets and CORS).

-- The origins (scheme://host[:port]) whose pages may use a client secret of the merchant's
-- payments (CORS); none by default.
ALTER TABLE api.merchants
    ADD COLUMN IF NOT EXISTS allowed_origins text[] NOT NULL DEFAULT '{}';

-- What lets a browser read this one payment (<id>_secret_<random>); shown to the merchant, so
-- kept as it is and compared in constant time. Payments made before it have none.
ALTER TABLE api.payments ADD COLUMN IF NOT EXISTS client_secret text;
