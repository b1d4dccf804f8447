"""`python -m infolens` is the `infolens` command."""
import sys

from .cli import main

sys.exit(main())
