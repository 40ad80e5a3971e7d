-- processor 0007: payouts the processor sent through the gateway, each recorded once with its
-- outcome in the transaction of the event that answers the payout saga's command.

CREATE TABLE processor.payouts (
    payout_id         text        PRIMARY KEY,
    merchant_id       text        NOT NULL,
    amount            bigint      NOT NULL CHECK (amount > 0 AND amount <= 1000000000000),
    currency          text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status            text        NOT NULL CHECK (status IN ('paid', 'failed')),
    gateway_payout_id text,
    -- The gateway's failure code (or gateway_rejected); NULL when paid.
    failure           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT processor_payouts_paid_at_the_gateway
        CHECK (status <> 'paid' OR gateway_payout_id IS NOT NULL)
);
