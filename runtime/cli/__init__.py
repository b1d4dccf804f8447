"""The `infolens` command: one module per command (explain, eval …, models), shared options in `options`."""
from __future__ import annotations

import sys

from .. import __version__, params
from ..errors import InfolensError
from . import benchmark, evaluate, explain, mipin, models, perf, sanity, serve, suite
from .options import Parser


def build_parser() -> Parser:
    top = Parser(prog="infolens", description="Information-theoretic explanations (PMI, IG in bits) for any ONNX "
                 "image classifier, on ONNX Runtime.")
    top.add_argument("--version", action="version", version=f"infolens {__version__}")
    sub = top.add_subparsers(dest="command", required=True, parser_class=Parser)
    explain.register(sub)
    ev = sub.add_parser("eval", help="faithfulness of saved explanations (deletion / insertion AUC)",
                        description="Check a saved explanation against the model it explains.")
    evsub = ev.add_subparsers(dest="eval_command", required=True, parser_class=Parser)
    evaluate.register(evsub)
    suite.register(evsub)
    benchmark.register(evsub)
    sanity.register(evsub)
    mipin.register(sub)
    perf.register(sub)
    models.register(sub)
    serve.register(sub)
    return top


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    from ..images import quiet_decoders

    quiet_decoders(stderr=args.command != "serve")
    try:
        return args.run(args)
    except InfolensError as e:
        print(f"infolens: error: {params.with_flag(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infolens: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `infolens models | head`
        sys.stderr.close()
        return 0
    except OSError as e:  # the file system said no (disk full, a permission, …): one line, not a traceback
        where = f" {e.filename}:" if e.filename else ""
        print(f"infolens: error:{where} {e.strerror or e}", file=sys.stderr)
        return 2
