-- notifier 0004: endpoints managed by merchants through the API (issue 16). Each endpoint names
-- the event types it wants; its secrets move to a table of their own (sealed as before, each for
-- its endpoint's id), where a rotated secret keeps signing until it expires; an endpoint may be
-- disabled by its merchant, or deleted.

ALTER TABLE notifier.endpoints ADD COLUMN enabled_events text[] NOT NULL DEFAULT '{*}';
ALTER TABLE notifier.endpoints ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE notifier.endpoints DROP CONSTRAINT endpoints_disabled_reason_known;
ALTER TABLE notifier.endpoints ADD CONSTRAINT endpoints_disabled_reason_known
    CHECK (disabled_reason IN ('gone', 'failing', 'operator', 'merchant', 'deleted'));

CREATE TABLE notifier.endpoint_secrets (
    id            bigserial   PRIMARY KEY,
    endpoint_id   text        NOT NULL REFERENCES notifier.endpoints (id),
    secret_plain  text        CONSTRAINT endpoint_secrets_plain_check
                              CHECK (secret_plain LIKE 'whsec_%'),
    secret_key_id text,
    secret_sealed bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    CONSTRAINT endpoint_secrets_sealed_or_plain
        CHECK ((secret_sealed IS NULL) <> (secret_plain IS NULL)
               AND (secret_sealed IS NULL) = (secret_key_id IS NULL))
);
CREATE INDEX endpoint_secrets_by_endpoint ON notifier.endpoint_secrets (endpoint_id, id);

INSERT INTO notifier.endpoint_secrets
    (endpoint_id, secret_plain, secret_key_id, secret_sealed, created_at)
SELECT id, secret_plain, secret_key_id, secret_sealed, created_at FROM notifier.endpoints;
ALTER TABLE notifier.endpoints DROP CONSTRAINT endpoints_secret_sealed_or_plain;
ALTER TABLE notifier.endpoints DROP COLUMN secret_plain;
ALTER TABLE notifier.endpoints DROP COLUMN secret_key_id;
ALTER TABLE notifier.endpoints DROP COLUMN secret_sealed;
