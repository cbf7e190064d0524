"""python -m benchmarks reliability|overhead|chaos|rules|injection|scale|fanout [--json] ..."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benchmarks import chaos, fanout, injection, overhead, reliability, scale
from benchmarks import rules as rules_bench
from benchmarks import worker as bench_worker
from benchmarks.common import configure_logging


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    for name, module, help_ in [
        ("reliability", reliability, "fault injection: baseline vs verified vs quorum"),
        ("chaos", chaos, "SIGKILL workers, restart the server; check every run"),
        ("overhead", overhead, "raftline with L1 rules vs a plain Temporal workflow"),
        ("rules", rules_bench, "L1 rules on the labelled corpus (FP/FN rates); --speed"),
        ("injection", injection, "injection guard: catch and false-positive rates; speed"),
        ("scale", scale, "long pipelines: time per step, carried state, bytes stored"),
        ("fanout", fanout, "parallel branches and a map: do they overlap"),
    ]:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--json", action="store_true", help="one JSON object on stdout")
        module.add_arguments(sp)
        sp.set_defaults(main=module.main)
    wp = sub.add_parser("worker", help="a benchmark worker process (used by the benchmarks)")
    bench_worker.add_arguments(wp)
    wp.set_defaults(main=bench_worker.main)
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    return int(args.main(args))


if __name__ == "__main__":
    sys.exit(main())
