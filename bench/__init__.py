"""Benchmarks against the real server: python -m bench (see the README, Performance)."""
