"""Benchmarks of modelcanary, each printing its figures as a table and writing them to ``bench/results/``."""
