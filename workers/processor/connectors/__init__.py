"""Gateway connectors to real providers, each behind ``Gateway`` and ``OperationsGateway``."""
