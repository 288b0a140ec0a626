"""Benchmarks behind `make bench` (speed lives here, never in timed unit tests)."""
