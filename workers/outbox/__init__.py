"""The outbox relay: moves stored events to Kafka, at least once, in order per payment.

``relay.OutboxRelay`` is the loop (claim a batch, produce, wait for every acknowledgement, mark
published, all in one transaction); ``publisher`` talks to Kafka, ``store`` to the outbox tables
(its SQL is in ``queries.sql``). ``relay.serve`` is what ``flowpay run-outbox`` and
``python -m workers.outbox`` run.
"""
