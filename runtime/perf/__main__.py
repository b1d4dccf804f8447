"""`python -m infolens.perf ARGS` is `infolens perf ARGS`."""
import sys

from ..cli import main

if __name__ == "__main__":  # not when a tool imports every module (the docs' API reference does)
    sys.exit(main(["perf", *sys.argv[1:]]))
