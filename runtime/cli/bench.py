"""`infolens bench ...`: the benchmark (`python -m infolens.bench`) from the one command; its own parser reads the
arguments (main() hands them over before the top-level parser, which would take their dashes for its own)."""
from __future__ import annotations


def register(sub) -> None:
    sub.add_parser("bench", help="throughput against raw ONNX Runtime (explain, --method mipin, --rss); "
                   "`infolens bench -h` for its options", add_help=False)


def run(argv: list[str]) -> int:
    from .. import bench

    return bench.main(argv)
