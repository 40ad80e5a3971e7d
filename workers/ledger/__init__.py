"""The ledger: a double-entry ledger kept from the payment event log, rebuilt by replaying it.

The chart of accounts and the posting rule of every event type: ``workers.ledger.rules``
(also the README's "The ledger"). The modules, from the event to the books:

    rules      pure: event + the payment's ledger state -> transfers (journal transactions)
    chain      the hash chain (one per source partition, in offset order)
    posting    pure: a batch of messages -> the rows to write, chained, with their sources
    store      the SQL (queries.sql), for ``ledger`` or replay's shadow schema
    applier    one batch in the caller's transaction: fast path, then one message at a time
    consumer   ``flowpay run-ledger``: offsets stored with the postings, replay-aware
    replay     ``flowpay replay``: rebuild into a shadow schema, check, swap in
    check      ``flowpay ledger check``: every invariant, each violation listed
    inspect    read-only views: a payment's postings, balances

The DDL is ``ledger_install(target)`` in schema.sql: PostgreSQL itself refuses unbalanced or
changed entries and transactions, double application and double resolution.
"""
