"""Scorers: one module per benchmark task, each with an `official` and a `strict` protocol."""
