"""Benchmarks: each prints its figures and one JSON line last (``streamwarden bench ...``)."""
