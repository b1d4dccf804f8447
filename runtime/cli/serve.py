"""`infolens serve`: the explain server (serve/app.py) on uvicorn, one command."""
from __future__ import annotations

import ipaddress
import os
import sys

from .. import params
from ..errors import InfolensError
from . import options


def register(sub) -> None:
    p = sub.add_parser("serve", help="an explain server: jobs API, KServe V1 explain route, metrics",
                       description="Serve explanations over HTTP (DESIGN §10). Without --token-file auth is off and "
                       "only a loopback --host is allowed.")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080)")
    p.add_argument("--state-dir", default="infolens-state", help="jobs database and job folders, kept across "
                   "restarts (default ./infolens-state)")
    p.add_argument("--models", metavar="DIR", help="folder of the served classifiers, each NAME.onnx with its card "
                   "NAME.json (default: the shipped models)")
    p.add_argument("--token-file", metavar="FILE", help="bearer tokens, one per line (or INFOLENS_TOKENS=a,b); "
                   "the health routes stay open")
    p.add_argument("--queue-size", type=int, default=64, help="active jobs at most; then 429 (default 64)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit, 413 beyond (default 20)")
    options.add_max_pixels(p, "413 beyond")
    p.add_argument("--max-forwards", type=int, default=5_000_000, help="forwards one job may need (default 5000000)")
    p.add_argument("--sync-forwards", type=int, default=20_000, help="budget of the synchronous "
                   "/v1/models/NAME:explain route per request; beyond, 422 points to the jobs API (default 20000)")
    p.add_argument("--retention-hours", type=float, default=168.0, help="ended jobs and their files are deleted "
                   "after this (default 168: a week)")
    p.add_argument("--chunk-forwards", type=int, default=4096, help="forwards a job runs before the next job's "
                   "turn (default 4096)")
    p.add_argument("--examples", metavar="DIR", help="photos the web viewer offers (default: examples/ of the source "
                   "tree, when infolens runs from one)")
    options.add_device(p)
    options.add_incremental(p)
    p.set_defaults(run=run)


def tokens(token_file: str | None) -> list[str]:
    """Tokens from --token-file (one per line; blank lines and # comments skipped) or INFOLENS_TOKENS (a,b)."""
    if token_file:
        try:
            with open(token_file) as f:
                found = [t.strip() for t in f if t.strip() and not t.lstrip().startswith("#")]
        except OSError as e:
            raise InfolensError(f"cannot read the token file {token_file}: {e.strerror or e}", "token_file") from None
        if not found:
            raise InfolensError(f"the token file {token_file} has no token", "token_file")
        return found
    return [t.strip() for t in os.environ.get("INFOLENS_TOKENS", "").split(",") if t.strip()]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def config_from(args):
    """The ServeConfig of the flags, each checked (InfolensError naming its flag)."""
    from ..serve.app import ServeConfig

    for name in ("port", "queue_size", "max_body_mb", "max_pixels", "max_forwards", "sync_forwards",
                 "retention_hours", "chunk_forwards"):
        params.check(name, getattr(args, name))
    accepted = tokens(args.token_file)
    if not accepted and not _loopback(args.host):
        raise InfolensError(f"--host {args.host} serves other machines: give bearer tokens with --token-file (or "
                            "INFOLENS_TOKENS), or listen on 127.0.0.1", "token_file")
    if args.models and not os.path.isdir(args.models):
        raise InfolensError(f"models folder not found: {args.models}", "models")
    if args.examples and not os.path.isdir(args.examples):
        raise InfolensError(f"examples folder not found: {args.examples}", "examples")
    return ServeConfig(state_dir=args.state_dir, models_dir=args.models, tokens=accepted, queue_size=args.queue_size,
                       max_body_mb=args.max_body_mb, max_pixels=args.max_pixels, max_forwards=args.max_forwards,
                       sync_forwards=args.sync_forwards, retention_hours=args.retention_hours,
                       chunk_forwards=args.chunk_forwards, examples_dir=args.examples,
                       placement={"device": args.device, "incremental": args.incremental, **options.gpu(args)})


def run(args) -> int:
    try:
        import uvicorn

        from ..serve.app import create_app
    except ImportError as e:
        raise InfolensError(f"the server needs the serve extra: pip install \"infolens[serve]\" ({e.name} is "
                            "missing)", "host") from None
    config = config_from(args)
    try:
        os.makedirs(config.state_dir, exist_ok=True)
    except OSError as e:
        raise InfolensError(f"cannot create the state folder {config.state_dir}: {e.strerror or e}",
                            "state_dir") from None
    app = create_app(config)
    print(f"infolens serve: http://{args.host}:{args.port}/  models {', '.join(app.state.models.names())}; "
          f"state {os.path.abspath(config.state_dir)}; auth {'on' if config.tokens else 'off'}", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
