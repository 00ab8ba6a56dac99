"""``llama-cffi serve``: the command line of the OpenAI/Ollama-compatible server.

One model from the command line (``llama-cffi serve MODEL -c 8192 -np 4``,
llama-server's flags) or several from a models file (``--config
models.toml``, see :mod:`llama_cffi.apps.server.config`). The server stack
(Starlette, uvicorn, pydantic, prometheus-client) is the optional extra
``server`` and is imported only when the server starts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import flags

API_KEY_ENV = "LLAMA_CFFI_API_KEY"


def add_serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "serve", help="OpenAI- and Ollama-compatible HTTP server (several models on demand)",
        description="Serve MODEL (llama.cpp flags as llama-server takes them), or the models "
                    "of a --config file, over OpenAI's and Ollama's HTTP APIs. Binds "
                    "127.0.0.1 unless --host says otherwise.")
    p.add_argument("model_arg", nargs="?", default=None, metavar="MODEL",
                   help="GGUF path or registry name (or -m); not with --config")
    s = p.add_argument_group("server")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="models file (TOML) with [server] settings and [models.NAME] tables")
    s.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default 8080)")
    s.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' (also ${API_KEY_ENV})")
    s.add_argument("-a", "--alias", action="append", default=[], metavar="NAME",
                   help="another name of the model in requests (repeatable)")
    s.add_argument("--ttl", type=float, default=0.0, metavar="SECONDS",
                   help="unload the model after this many idle seconds (0 = never)")
    s.add_argument("--max-loaded", type=int, default=None, metavar="N",
                   help="models loaded at once; the least recently used is unloaded")
    s.add_argument("--max-body", type=int, default=None, metavar="BYTES",
                   help="largest request body accepted (default 16 MiB)")
    s.add_argument("--max-tokens-cap", type=int, default=None, metavar="N",
                   help="no request generates more tokens than N (default 8192)")
    s.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="cancel a generation after this many seconds")
    s.add_argument("--cors", action="append", default=None, metavar="ORIGIN",
                   help="allow this origin by CORS (repeatable; '*' for any); default off")
    s.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    flags.add_model_flags(p)
    p.add_argument("--mmproj", default=None, metavar="FILE",
                   help="multimodal projector GGUF for the model (images/audio in chat)")
    flags.add_context_flags(p)
    flags.add_sampling_flags(p)
    flags.add_speculative_flags(p)
    p.set_defaults(func=cmd_serve)


def build_config(a: argparse.Namespace) -> object:
    """The ServerConfig the parsed arguments describe."""
    from .server.config import ServerConfig, entry_from_namespace, load_config

    overrides = {"host": a.host, "port": a.port,
                 "api_key": a.api_key or os.environ.get(API_KEY_ENV) or None,
                 "max_loaded": a.max_loaded, "max_body_bytes": a.max_body,
                 "max_tokens_cap": a.max_tokens_cap, "request_timeout": a.timeout,
                 "cors_origins": tuple(a.cors) if a.cors else None}
    if a.config:
        if a.model_arg:
            raise SystemExit("llama-cffi serve: give MODEL or --config, not both")
        return load_config(a.config, **overrides)
    if a.model_arg:
        a.model = a.model_arg
    name = a.alias[0] if a.alias else Path(str(a.model)).name.removesuffix(".gguf")
    aliases = a.alias[1:] if a.alias else [str(a.model)]
    entry = entry_from_namespace(name, a, aliases=[x for x in aliases if x != name], ttl=a.ttl)
    values = {k: v for k, v in overrides.items() if v is not None}
    return ServerConfig(models=[entry], any_model_name=True, **values)


def cmd_serve(a: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .server.app import create_app
        from .server.config import ServerConfig
    except ImportError as exc:
        print(f"llama-cffi serve: the server needs the 'server' extra "
              f"(pip install 'llama-cffi[server]'): {exc}", file=sys.stderr)
        return 2
    config = build_config(a)
    assert isinstance(config, ServerConfig)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(name)s: %(message)s")
    if config.host not in ("127.0.0.1", "localhost", "::1") and not config.api_key:
        logging.getLogger("llama_cffi.server").warning(
            "serving on %s without an API key: anyone who can reach it can use it", config.host)
    app = create_app(config)
    names = ", ".join(e.name for e in config.models)
    print(f"llama-cffi: serving {names} on http://{config.host}:{config.port}", file=sys.stderr,
          flush=True)
    uvicorn.run(app, host=config.host, port=config.port, log_level=a.log_level,
                timeout_graceful_shutdown=5)
    return 0
