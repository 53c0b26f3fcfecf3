"""The judge benchmark: every registered judge and an oracle SPRT on the same simulated rollouts.

Run it with ``python -m bench.judge``; docs/judge-benchmark.md explains what it measures and how.
"""
