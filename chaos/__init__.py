"""The chaos scenario: FlowPay on a stack of its own, under load, while its parts are killed.

``python -m chaos`` (``make chaos``) runs it at full size and prints a summary;
``tests/test_chaos.py`` runs it CI-sized. Modules: ``stack`` (PostgreSQL, Kafka, settings),
``roles`` (the role processes), ``receiver`` (the merchants' webhook server), ``load`` (payments,
refunds, captures, cancels and payouts through the API), ``faults`` (the seeded schedule and
each fault), ``settle`` (waiting for quiet), ``eventlog`` (reading the topic and the groups'
offsets), ``evidence`` (what the checks read), ``invariants`` and ``money_checks`` (what must
hold afterwards), ``secrets`` (no secret in any log), ``scenario`` (all of it in order) and
``report`` (the table and the JSON under ``reports/``).
"""
