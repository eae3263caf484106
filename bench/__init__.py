"""Benchmarks of the costs that matter: `python -m bench [--quick] [NAME ...]`.

Every figure is a ratio against a baseline measured in the same run (interleaved where it can
be), because the machines these run on are shared and noisy. Each benchmark module has one
`run(settings) -> dict` that returns its measured numbers, its goals and whether they were met;
`bench.__main__` runs them, prints a table and writes bench/results.json. See
docs/performance.md for what each one measures and how to read it.
"""
