"""Ray Serve: the application of ``llama-cffi serve`` (OpenAI and Ollama APIs,
``/health``, ``/slots``, ``/metrics``) as a Serve deployment of N replicas.

Each replica builds the same Starlette app ``llama-cffi serve`` runs (with
its own models, loaded on demand as there) and Serve mounts it as the
deployment's ASGI ingress; Serve's proxy spreads requests over the replicas
and restarts one that dies. ::

    from ray import serve
    from llama_cffi.integrations.ray_serve import deployment

    app = deployment(["smollm2-135m", "-c", "4096", "-np", "4"], num_replicas=2)
    serve.run(app, route_prefix="/")      # http://127.0.0.1:8000/v1/chat/completions

Threads: :func:`deployment` and :func:`server_config` may be called from any
thread; each replica's app belongs to that replica's event loop.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from ..apps.serve import add_serve_parser, build_config
from ..apps.server.app import create_app
from ..apps.server.config import ServerConfig


def server_config(args: Sequence[str]) -> ServerConfig:
    """The :class:`ServerConfig` ``llama-cffi serve ARGS`` would run (``MODEL
    -c 4096 -np 4``, or ``--config models.toml``); ``--host``/``--port`` are
    Serve's business and ignored here."""
    parser = argparse.ArgumentParser(prog="llama-cffi")
    add_serve_parser(parser.add_subparsers(dest="command"))
    config = build_config(parser.parse_args(["serve", *args]))
    assert isinstance(config, ServerConfig)
    return config


class LlamaServer:
    """A replica's state: the server configuration; Serve builds the app from it
    (``__serve_build_asgi_app__``) once the replica has started."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.config)


def deployment(args: Sequence[str] | ServerConfig, *, name: str = "llama-cffi",
               num_replicas: int | str | None = None,
               autoscaling_config: Mapping[str, Any] | None = None,
               ray_actor_options: Mapping[str, Any] | None = None,
               max_ongoing_requests: int | None = None,
               **options: Any) -> Any:
    """A bound Serve application serving ``llama-cffi serve ARGS`` (or a
    :class:`ServerConfig`) from each replica; pass it to ``serve.run``.

    num_replicas, autoscaling_config, ray_actor_options, max_ongoing_requests
    and ``options`` (any other ``serve.deployment`` option: ``health_check_period_s``,
    ``graceful_shutdown_timeout_s`` ...) go to ``serve.deployment`` unchanged.
    Give each replica the CPUs its decodes use (``ray_actor_options={"num_cpus": 4}``
    with ``-t 4``), and ``max_ongoing_requests`` at least the slots (``-np``)
    of its model, so Serve does not queue what the engine would batch.
    """
    from ray import serve  # the optional extra `ray`

    config = args if isinstance(args, ServerConfig) else server_config(args)
    settings: dict[str, Any] = dict(options)
    for key, value in (("num_replicas", num_replicas),
                       ("autoscaling_config", autoscaling_config),
                       ("ray_actor_options", ray_actor_options),
                       ("max_ongoing_requests", max_ongoing_requests)):
        if value is not None:
            settings[key] = dict(value) if isinstance(value, Mapping) else value
    ingress = serve.ingress()(LlamaServer)
    return serve.deployment(ingress, name=name, **settings).bind(config)
