"""``SamplingParams``: how one request is sampled and when it stops."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .base import INT32_MAX, _float, _int, _pairs, _Params
from .fields import document, param

GRAMMAR_ENGINES = ("auto", "llguidance", "llama")
DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed
DRY_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")
DEFAULT_SAMPLERS = ("penalties", "dry", "top_n_sigma", "top_k", "typical_p", "top_p", "min_p",
                    "xtc", "temperature")
SAMPLER_NAMES = {"penalties": "penalties", "dry": "dry", "top_n_sigma": "top_n_sigma",
                 "top_k": "top_k", "typical_p": "typical_p", "typ_p": "typical_p",
                 "top_p": "top_p", "min_p": "min_p", "xtc": "xtc",
                 "temperature": "temperature", "temp": "temperature", "infill": "infill",
                 "adaptive_p": "adaptive_p",
                 # llama.cpp's one-letter --sampling-seq names
                 "e": "penalties", "d": "dry", "s": "top_n_sigma", "k": "top_k",
                 "y": "typical_p", "p": "top_p", "m": "min_p", "x": "xtc",
                 "t": "temperature", "i": "infill", "a": "adaptive_p"}


# -- sampling -----------------------------------------------------------------------------


def _parse_bias(text: str) -> tuple[tuple[int, float]]:
    """``-l TOKEN(+/-)BIAS`` as llama.cpp: ``15043+1``, ``15043-inf``."""
    m = re.fullmatch(r"\s*(\d+)\s*([+-]\s*(?:inf|[0-9.eE+-]+))\s*", text)
    if not m:
        raise ValueError(f"--logit-bias expects TOKEN_ID(+/-)BIAS, got {text!r}")
    return ((int(m.group(1)), float(m.group(2).replace(" ", ""))),)


def _format_bias(item: tuple[int, float]) -> str:
    token, bias = item
    return f"{token}{'+' if bias >= 0 else '-'}{abs(bias)!r}".replace("inf", "inf")


def _parse_schema(text: str) -> Any:
    """Inline JSON, or ``@file`` with JSON."""
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as fh:
            text = fh.read()
    return json.loads(text)


def normalise_samplers(seq: Any) -> tuple[str, ...]:
    """``"kpmt"``, ``"top_k;top_p"`` or a list of names -> canonical sampler names."""
    if isinstance(seq, str):
        letters = (";" not in seq and len(seq) <= 12 and seq.isalpha()
                   and all(c in SAMPLER_NAMES for c in seq))
        seq = list(seq) if letters else seq.split(";")
    out = []
    for s in seq:
        key = str(s).strip().lower().replace("-", "_")
        if key not in SAMPLER_NAMES:
            raise ValueError(f"unknown sampler {s!r} in samplers; known: "
                             f"{', '.join(sorted(set(SAMPLER_NAMES.values())))}")
        out.append(SAMPLER_NAMES[key])
    return tuple(out)


@document
@dataclasses.dataclass(frozen=True, kw_only=True)
class SamplingParams(_Params):
    """How one request is sampled and when it stops (llama-server's request fields,
    llama.cpp's sampling flags). Defaults are llama.cpp's (``common/common.h``)."""

    max_tokens: int = param(-1, "-n", "--n-predict", "--predict", parse=int, metavar="N",
                            help="most tokens to generate, -1 (or None) = until the end or a "
                                 "full context")
    stop: str | Sequence[str] = param((), "--stop", "-r", "--reverse-prompt", parse=str,
                                  repeat=True, metavar="TEXT",
                                  help="strings that end the output (not included); repeatable")
    ignore_eos: bool = param(False, "--ignore-eos",
                             help="keep generating after end-of-generation tokens")
    logprobs: int | None = param(None, "--logprobs", parse=int, metavar="N",
                                 help="record each token's log-probability and the top N "
                                      "alternatives (llama-server's n_probs)")
    temperature: float = param(0.8, "--temp", "--temperature", parse=float, metavar="T",
                               help="temperature; <= 0 is greedy")
    top_k: int = param(40, "--top-k", parse=int, metavar="K", help="top-k, <= 0 keeps all")
    top_p: float = param(0.95, "--top-p", parse=float, metavar="P", help="top-p, 1.0 = off")
    min_p: float = param(0.05, "--min-p", parse=float, metavar="P", help="min-p, 0.0 = off")
    typical_p: float = param(1.0, "--typical", "--typical-p", parse=float, metavar="P",
                             help="locally typical sampling, 1.0 = off")
    xtc_probability: float = param(0.0, "--xtc-probability", parse=float, metavar="P",
                                   help="XTC probability, 0.0 = off")
    xtc_threshold: float = param(0.1, "--xtc-threshold", parse=float, metavar="P",
                                 help="XTC threshold")
    top_n_sigma: float = param(-1.0, "--top-n-sigma", "--top-nsigma", parse=float,
                               metavar="N", help="top-n-sigma, -1 = off")
    repeat_penalty: float = param(1.0, "--repeat-penalty", parse=float, metavar="F",
                                  help="repetition penalty, 1.0 = off")
    repeat_last_n: int = param(64, "--repeat-last-n", parse=int, metavar="N",
                               help="tokens the penalties look at, -1 = context size")
    frequency_penalty: float = param(0.0, "--frequency-penalty", parse=float, metavar="F",
                                     help="frequency penalty, 0.0 = off")
    presence_penalty: float = param(0.0, "--presence-penalty", parse=float, metavar="F",
                                    help="presence penalty, 0.0 = off")
    dry_multiplier: float = param(0.0, "--dry-multiplier", parse=float, metavar="F",
                                  help="DRY penalty multiplier, 0.0 = off")
    dry_base: float = param(1.75, "--dry-base", parse=float, metavar="F", help="DRY base")
    dry_allowed_length: int = param(2, "--dry-allowed-length", parse=int, metavar="N",
                                    help="DRY: repeats up to this length are not penalised")
    dry_penalty_last_n: int = param(64, "--dry-penalty-last-n", parse=int, metavar="N",
                                    help="DRY: tokens looked at, -1 = context size")
    dry_sequence_breakers: str | Sequence[str] = param(
        DRY_SEQUENCE_BREAKERS, "--dry-sequence-breaker", parse=str, repeat=True,
        metavar="TEXT", help="DRY sequence breakers; repeatable")
    dynatemp_range: float = param(0.0, "--dynatemp-range", parse=float, metavar="F",
                                  help="dynamic temperature range, 0.0 = off")
    dynatemp_exponent: float = param(1.0, "--dynatemp-exp", parse=float, metavar="F",
                                     help="dynamic temperature exponent")
    mirostat: int = param(0, "--mirostat", parse=int, choices=("0", "1", "2"),
                          help="Mirostat: 0 = off, 1 = Mirostat, 2 = Mirostat 2.0")
    mirostat_tau: float = param(5.0, "--mirostat-ent", parse=float, metavar="F",
                                help="Mirostat target entropy (tau)")
    mirostat_eta: float = param(0.1, "--mirostat-lr", parse=float, metavar="F",
                                help="Mirostat learning rate (eta)")
    adaptive_target: float = param(-1.0, "--adaptive-target", parse=float, metavar="P",
                                   help="adaptive-p target probability, < 0 = off")
    adaptive_decay: float = param(0.9, "--adaptive-decay", parse=float, metavar="F",
                                  help="adaptive-p decay")
    seed: int = param(DEFAULT_SEED, "-s", "--seed", parse=int, metavar="N",
                      help="random seed, 4294967295 = random")
    min_keep: int = param(0, "--min-keep", parse=int, metavar="N",
                          help="samplers keep at least this many tokens")
    logit_bias: Sequence[tuple[int, float]] | Mapping[int, float] = param(
        (), "-l", "--logit-bias", parse=_parse_bias, format=_format_bias, repeat=True,
        metavar="TOKEN(+/-)BIAS", help="add BIAS to a token's logit (-inf forbids it)")
    samplers: str | Sequence[str] = param(
        DEFAULT_SAMPLERS, "--samplers", "--sampling-seq", parse=normalise_samplers,
        format=lambda seq: ";".join(seq), metavar="NAMES",
        help="sampler order: ';'-separated names or letters, e.g. 'kpmt'")
    backend_sampling: bool = param(
        False, "-bs", "--backend-sampling",
        help="sample inside the model's graph where llama.cpp can (greedy, dist, top-k, "
             "top-p, min-p, temperature, penalties, logit bias; experimental); not with a "
             "grammar, logprobs or speculative drafts, which sample on the CPU")
    grammar: Any = param(None, "--grammar", parse=str, metavar="GBNF",
                         format=lambda g: g if isinstance(g, str) else g.text,
                         help="GBNF grammar the output must follow (text or a Grammar)")
    json_schema: Any = param(None, "-j", "--json-schema", parse=_parse_schema,
                             format=lambda s: json.dumps(s), metavar="SCHEMA",
                             help="JSON schema the output must satisfy (inline JSON or @file)")
    grammar_engine: str = param(
        "auto", "--grammar-engine", parse=str, choices=("auto", "llguidance", "llama"),
        help="what enforces grammar and json_schema: 'llguidance' (the llguidance package, "
             "as llama.cpp's LLAMA_LLGUIDANCE build option), 'llama' (llama.cpp's grammar "
             "engine) or 'auto' (llguidance when installed)")

    ALIASES = {"temp": "temperature", "typ_p": "typical_p", "typical": "typical_p",
               "penalty_repeat": "repeat_penalty", "penalty_last_n": "repeat_last_n",
               "penalty_freq": "frequency_penalty", "penalty_present": "presence_penalty",
               "dynatemp_exp": "dynatemp_exponent", "mirostat_ent": "mirostat_tau",
               "mirostat_lr": "mirostat_eta", "n_predict": "max_tokens",
               "n_probs": "logprobs", "sampling_seq": "samplers"}

    def __post_init__(self) -> None:
        max_tokens: object = self.max_tokens
        if max_tokens is None:  # llama-cpp-python's "no limit"
            self._set("max_tokens", -1)
        self._set("max_tokens", _int(self.max_tokens, "max_tokens", minimum=-1))
        stop: object = self.stop
        if isinstance(stop, str):  # one stop string, not its characters
            stop = (stop,)
        if stop is None:
            stop = ()
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
            raise TypeError("stop must be a string or a sequence of strings")
        self._set("stop", tuple(s for s in stop if s))
        if not isinstance(self.ignore_eos, bool):
            raise TypeError("ignore_eos must be True or False")
        if not isinstance(self.backend_sampling, bool):
            raise TypeError("backend_sampling must be True or False")
        if self.logprobs is not None:
            self._set("logprobs", _int(self.logprobs, "logprobs", minimum=0))
        self._set("temperature", _float(self.temperature, "temperature"))
        self._set("top_k", _int(self.top_k, "top_k", minimum=-INT32_MAX, maximum=INT32_MAX))
        self._set("top_p", _float(self.top_p, "top_p", 0.0, 1.0))
        self._set("min_p", _float(self.min_p, "min_p", 0.0, 1.0))
        self._set("typical_p", _float(self.typical_p, "typical_p", 0.0, 1.0))
        self._set("xtc_probability", _float(self.xtc_probability, "xtc_probability", 0.0, 1.0))
        self._set("xtc_threshold", _float(self.xtc_threshold, "xtc_threshold"))
        self._set("top_n_sigma", _float(self.top_n_sigma, "top_n_sigma"))
        self._set("repeat_penalty", _float(self.repeat_penalty, "repeat_penalty"))
        if self.repeat_penalty <= 0:
            raise ValueError("repeat_penalty must be > 0 (1.0 disables it)")
        self._set("repeat_last_n", _int(self.repeat_last_n, "repeat_last_n", minimum=-1,
                                        maximum=INT32_MAX))
        for name in ("frequency_penalty", "presence_penalty", "dry_multiplier", "dry_base",
                     "dynatemp_range", "dynatemp_exponent", "mirostat_tau", "mirostat_eta",
                     "adaptive_target", "adaptive_decay"):
            self._set(name, _float(getattr(self, name), name))
        self._set("dry_allowed_length", _int(self.dry_allowed_length, "dry_allowed_length",
                                             minimum=0, maximum=INT32_MAX))
        self._set("dry_penalty_last_n", _int(self.dry_penalty_last_n, "dry_penalty_last_n",
                                             minimum=-1, maximum=INT32_MAX))
        breakers = self.dry_sequence_breakers
        if isinstance(breakers, str):
            breakers = (breakers,)
        if not all(isinstance(s, str) for s in breakers):
            raise TypeError("dry_sequence_breakers must be strings")
        self._set("dry_sequence_breakers", tuple(breakers))
        mirostat = _int(self.mirostat, "mirostat")
        if mirostat not in (0, 1, 2):
            raise ValueError("mirostat must be 0, 1 or 2")
        self._set("mirostat", mirostat)
        self._set("seed", _int(self.seed, "seed") & 0xFFFFFFFF)
        self._set("min_keep", _int(self.min_keep, "min_keep", minimum=0))
        bias = _pairs(self.logit_bias, "logit_bias")
        self._set("logit_bias", tuple((_int(t, "logit_bias token", minimum=0),
                                       _float(b, "logit_bias value")) for t, b in bias))
        self._set("samplers", normalise_samplers(self.samplers))
        if self.grammar is not None and not isinstance(self.grammar, str) and \
                not isinstance(getattr(self.grammar, "text", None), str):
            raise TypeError("grammar must be GBNF text or a llama_cffi.Grammar")
        schema = self.json_schema
        if schema is True:  # "any JSON object", as response_format json_object
            schema = {"type": "object"}
        elif isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise ValueError(f"json_schema is not valid JSON: {exc}") from None
        if schema is not None and not isinstance(schema, (dict, bool)):
            raise TypeError("json_schema must be a JSON schema (a dict, or JSON text)")
        if schema is not None and self.grammar is not None:
            raise ValueError("give either grammar or json_schema, not both")
        self._set("json_schema", schema)
        engine = "auto" if self.grammar_engine is None else self.grammar_engine
        if engine not in GRAMMAR_ENGINES:
            raise ValueError(f"grammar_engine must be one of {', '.join(GRAMMAR_ENGINES)}, "
                             f"got {engine!r}")
        if engine == "llguidance" and importlib.util.find_spec("llguidance") is None:
            raise ValueError("grammar_engine 'llguidance' needs the llguidance package "
                             "(pip install 'llama-cffi[llguidance]')")
        self._set("grammar_engine", engine)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0 and self.mirostat == 0
