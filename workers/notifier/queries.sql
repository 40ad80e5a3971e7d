-- The notifier's SQL.

-- name: endpoint_insert
INSERT INTO notifier.endpoints (id, merchant_id, url, secret)
VALUES (%(id)s, %(merchant_id)s, %(url)s, %(secret)s);
