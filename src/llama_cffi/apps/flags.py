"""The llama.cpp-style flags shared by the ``llama-cffi`` subcommands and the
server's model configuration: argument groups generated from the parameter
objects (:mod:`~llama_cffi.objects.params`) and the objects read back from
parsed arguments."""

from __future__ import annotations

import argparse

from ..objects import registry as models
from ..objects import rpc
from ..objects.grammar import Grammar
from ..objects.params import ContextParams, ModelParams, SamplingParams, SpeculativeParams
from ..objects.params.fields import add_flags, from_args


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model (ModelParams: llama_model_params)")
    g.add_argument("-m", "--model", default=models.DEFAULT_MODEL,
                   help=f"GGUF path or registry name ({', '.join(models.REGISTRY)}); "
                        f"default {models.DEFAULT_MODEL}")
    add_flags(g, ModelParams)
    g.add_argument("--no-mmap", dest="x_no_mmap", action="store_true",
                   help="do not memory-map the model (--load-mode none)")
    g.add_argument("--mlock", dest="x_mlock", action="store_true",
                   help="keep the model in RAM (--load-mode mmap+mlock)")
    g.add_argument("--rpc", default=None, metavar="SERVERS",
                   help="comma-separated host:port of RPC servers to use as devices")


def add_context_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("context (ContextParams: llama_context_params)")
    add_flags(g, ContextParams)


def add_sampling_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (SamplingParams)")
    add_flags(g, SamplingParams)
    g.add_argument("--grammar-file", dest="x_grammar_file", default=None, metavar="FILE",
                   help="file with a GBNF grammar (as --grammar)")


def add_speculative_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("speculative decoding (SpeculativeParams)")
    add_flags(g, SpeculativeParams)


def model_params(a: argparse.Namespace) -> ModelParams:
    params = from_args(ModelParams, a)
    if a.x_no_mmap or a.x_mlock:
        if params.load_mode is not None:
            raise SystemExit("llama-cffi: error: give either --load-mode or --no-mmap/--mlock")
        params = params.replace(use_mmap=not a.x_no_mmap, use_mlock=a.x_mlock)
    return params


def context_params(a: argparse.Namespace, default_n_ctx: int | None = 4096) -> ContextParams:
    params = from_args(ContextParams, a)
    if params.n_ctx is None and default_n_ctx is not None:
        params = params.replace(n_ctx=default_n_ctx)
    return params


def sampling_params(a: argparse.Namespace, base: SamplingParams) -> SamplingParams:
    given = [x for x in (a.grammar, a.x_grammar_file, a.json_schema) if x is not None]
    if len(given) > 1:
        raise SystemExit("llama-cffi: error: give only one of --grammar, --grammar-file, "
                         "--json-schema")
    params = from_args(SamplingParams, a, base=base)
    if a.x_grammar_file:
        params = params.replace(grammar=Grammar.from_file(a.x_grammar_file))
    return params


def add_rpc_servers(a: argparse.Namespace) -> None:
    if getattr(a, "rpc", None):
        for endpoint in a.rpc.split(","):
            rpc.add_server(endpoint.strip())
