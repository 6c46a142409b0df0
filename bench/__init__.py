"""Benchmarks: `python -m bench.merge_speed`, `python -m bench.eval_speed`. Results: docs/benchmarks.md."""
