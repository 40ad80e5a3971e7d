"""The local stack run as plain processes: PostgreSQL, Kafka and a supervisor of FlowPay's roles.

Operator tooling, not a service: only the CLI and the tests use it.
"""
