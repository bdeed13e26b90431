"""`labkit serve api_server [MODEL] [...]`: the OpenAI-compatible HTTP server.

Binds 127.0.0.1 unless told otherwise (`--server-name 0.0.0.0` exposes it to the network,
and then `--api-keys` should be set).
"""
from __future__ import annotations

import argparse
import sys

from labkit.clitools import add_model_argument
from labkit.serve.engine_args import add_engine_arguments, build_engine, engine_kwargs


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="what", required=True, metavar="api_server")
    s = sub.add_parser("api_server", help="OpenAI-compatible API: /v1/models, /v1/chat/completions, /v1/completions")
    add_model_argument(s)
    s.add_argument("--server-name", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--server-port", type=int, default=23333)
    s.add_argument("--model-name", default=None, help="the name clients send as 'model' (default: MODEL as given)")
    s.add_argument("--api-keys", nargs="+", default=None, metavar="KEY",
                   help="accept only requests with 'Authorization: Bearer KEY'")
    add_engine_arguments(s)


def run(args) -> int:
    from labkit.serve.api_server import bind, create_app, serve

    kwargs = engine_kwargs(args)
    sock = bind(args.server_name, args.server_port)   # a taken port fails now, not after the model loads
    llm = build_engine(args.model, **kwargs)
    name = args.model_name or args.model
    app = create_app(llm, model_name=name, api_keys=args.api_keys)
    print(f"labkit serve: '{name}' on http://{args.server_name}:{args.server_port}/v1 "
          f"(max_model_len {llm.max_model_len}{', API keys required' if args.api_keys else ''})",
          file=sys.stderr, flush=True)
    serve(app, llm, sock)
    return 0
