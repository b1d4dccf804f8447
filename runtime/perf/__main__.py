"""`python -m infolens.perf ARGS` is `infolens perf ARGS`."""
import sys

from ..cli import main

sys.exit(main(["perf", *sys.argv[1:]]))
