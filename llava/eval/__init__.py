"""Evaluation runners and scorers (MM-MergeBench, POPE, MME, MMBench)."""
