"""Samplers and sampler chains (``llama_sampler``): ``llama_cffi.sampling``.

A :class:`SamplerChain` runs its samplers in order on the candidates of one
output and picks a token. Samplers are made with the functions of this module
(``top_k(40)``, ``temp(0.8)``, ``dist(seed=1)``, ``grammar(vocab, gbnf)``, ...)
or written in Python (:class:`PythonSampler`); adding one to a chain hands its
C object to the chain, which frees it.

Parameter names and defaults are those of llama.cpp's ``common/common.h`` and
its command-line flags. :meth:`SamplerChain.from_params` builds the chain
llama.cpp's tools build from the same settings.

This module gathers the public names; the samplers are defined in
:mod:`.samplers`, the chains and the chain builder in :mod:`.chain`.
"""

from __future__ import annotations

from .chain import DEFAULTS, SamplerChain, build_chain, grammar, model_sampling_defaults
from .samplers import (
    DEFAULT_SEED,
    DRY_SEQUENCE_BREAKERS,
    TOKEN_DATA,
    Candidates,
    PythonSampler,
    Sampler,
    adaptive_p,
    dist,
    dry,
    greedy,
    infill,
    logit_bias,
    min_p,
    mirostat,
    mirostat_v2,
    penalties,
    temp,
    temp_ext,
    top_k,
    top_n_sigma,
    top_p,
    typical,
    xtc,
)

__all__ = [
    "DEFAULTS", "DEFAULT_SEED", "DRY_SEQUENCE_BREAKERS", "TOKEN_DATA",
    "Candidates", "PythonSampler", "Sampler", "SamplerChain",
    "adaptive_p", "build_chain", "dist", "dry", "grammar", "greedy", "infill", "logit_bias",
    "min_p", "mirostat", "mirostat_v2", "model_sampling_defaults", "penalties", "temp",
    "temp_ext", "top_k", "top_n_sigma", "top_p", "typical", "xtc",
]
