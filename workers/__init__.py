"""FlowPay services: one subpackage per service, plus the shared ``core``.

Services talk to each other only through Kafka; none imports another (see the
import-linter contracts in ``pyproject.toml``).
"""
