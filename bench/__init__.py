"""Benchmarks: measure, never assert. Not part of `make test`."""
