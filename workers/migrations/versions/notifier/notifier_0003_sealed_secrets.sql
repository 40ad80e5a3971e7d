-- notifier 0003: webhook signing secrets encrypted at rest (AES-256-GCM, workers.core.sealing).
-- New secrets are stored sealed only: the id of the key and nonce || ciphertext || tag. The key
-- is no migration's to hold, so the secrets stored before stay as they were, in secret_plain,
-- until `flowpay secrets rotate` seals them and clears it (`flowpay dev up` does so locally).

ALTER TABLE notifier.endpoints RENAME COLUMN secret TO secret_plain;
ALTER TABLE notifier.endpoints ALTER COLUMN secret_plain DROP NOT NULL;
ALTER TABLE notifier.endpoints ADD COLUMN secret_key_id text;
ALTER TABLE notifier.endpoints ADD COLUMN secret_sealed bytea;
ALTER TABLE notifier.endpoints ADD CONSTRAINT endpoints_secret_sealed_or_plain
    CHECK ((secret_sealed IS NULL) <> (secret_plain IS NULL)
           AND (secret_sealed IS NULL) = (secret_key_id IS NULL));
