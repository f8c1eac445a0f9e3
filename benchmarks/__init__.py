"""Benchmarks of shufflenet-cli: run them as modules from the repository root, `python -m benchmarks.bench_cpu`
(see README.md). Not part of the installed package."""
