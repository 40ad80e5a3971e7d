"""The ledger: a double-entry ledger rebuilt from the event log."""
