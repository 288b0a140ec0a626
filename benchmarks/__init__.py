"""Benchmarks behind `make bench` (speed lives here, never in timed unit tests).

Not part of the installed package: they run from a checkout, ``python -m benchmarks``.
"""
