"""Benchmarks of the gateway against their ceilings: `python bench/run.py` (never run as tests)."""
