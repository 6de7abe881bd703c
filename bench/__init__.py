"""Benchmark for pinlife: `make bench` / `make bench-quick` (python -m bench.run).

See bench/README.md for what each figure measures and how.
"""
