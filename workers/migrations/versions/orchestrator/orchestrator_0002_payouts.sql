-- orchestrator 0002: payouts are sagas too.

ALTER TABLE orchestrator.sagas
    DROP CONSTRAINT sagas_type_known,
    ADD CONSTRAINT sagas_type_known CHECK (type IN ('payment', 'refund', 'payout'));
