"""What the server serves: models (from a TOML file or the command line) and
its own settings.

A models file, the llama-swap / Ollama way::

    [server]
    host = "127.0.0.1"      # the default; anything else exposes the server
    port = 8080
    max_loaded = 2          # models kept loaded at once (least recently used goes)
    api_key = "secret"      # or the LLAMA_CFFI_API_KEY environment variable

    [models.smollm]
    model = "smollm2-135m"  # a GGUF path or a registry name
    aliases = ["gpt-4o-mini"]
    ttl = 300               # unload after 300 s without requests (0 = never)
    args = "-c 8192 -np 4 --temp 0.7"   # llama.cpp flags, as llama-server takes them
    n_gpu_layers = 99       # ... or the same settings as keys: a field name of
    "flash-attn" = "on"     # ModelParams/ContextParams/SamplingParams/
                            # SpeculativeParams, or a flag's long name

Nothing here imports the ASGI stack, so ``llama-cffi --help`` works without
the ``server`` extra.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ...errors import LlamaError
from ...objects.params import ContextParams, ModelParams, SamplingParams, SpeculativeParams
from ...objects.params.base import _Params
from ...objects.params.fields import flag_of, from_args
from .. import flags

log = logging.getLogger("llama_cffi.server")

DEFAULT_PARALLEL = 4
"""Slots per model unless ``-np`` says otherwise (llama-server's automatic value)."""
DEFAULT_N_CTX = 4096


class ConfigError(LlamaError, ValueError):
    """The models file or the command line names something that does not exist."""


class _Parser(argparse.ArgumentParser):
    """An argument parser that raises instead of exiting."""

    def error(self, message: str) -> Any:  # argparse's hook: must not return
        raise ConfigError(message)


def model_flag_parser() -> argparse.ArgumentParser:
    """The llama.cpp flags a model takes (``-m`` and every params field's flags)."""
    p = _Parser(prog="model args", add_help=False)
    flags.add_model_flags(p)
    p.add_argument("--mmproj", default=None, metavar="FILE",
                   help="multimodal projector GGUF for the model")
    flags.add_context_flags(p)
    flags.add_sampling_flags(p)
    flags.add_speculative_flags(p)
    return p


_PARAM_CLASSES: tuple[type[_Params], ...] = (ModelParams, ContextParams, SpeculativeParams,
                                            SamplingParams)


def _flag_names() -> dict[str, str]:
    """Long flag names without dashes (``ctx-size``, ``n-gpu-layers``) -> field names."""
    out: dict[str, str] = {}
    for cls in _PARAM_CLASSES:
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            flag = flag_of(f)
            for name in (*flag.flags, *flag.negative):
                if name.startswith("--"):
                    out.setdefault(name[2:], f.name)
    return out


@dataclasses.dataclass
class ModelEntry:
    """One servable model: where it is, what it is called, how it is loaded."""

    name: str
    model: str
    """A GGUF path or a registry name."""
    aliases: tuple[str, ...] = ()
    ttl: float = 0.0
    """Seconds without requests after which the model is unloaded (0 = never)."""
    model_params: ModelParams = dataclasses.field(default_factory=ModelParams)
    context_params: ContextParams = dataclasses.field(default_factory=ContextParams)
    speculative: SpeculativeParams = dataclasses.field(default_factory=SpeculativeParams)
    sampling: SamplingParams = dataclasses.field(default_factory=SamplingParams)
    """Defaults of every request to this model (a request's fields override them)."""
    rpc: tuple[str, ...] = ()
    mmproj: str | None = None
    """A multimodal projector GGUF (``--mmproj``): chat messages may carry images/audio."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclasses.dataclass
class ServerConfig:
    """The server's own settings and its models."""

    models: list[ModelEntry]
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    """Bearer key required on every endpoint but /health (None = open)."""
    max_loaded: int = 0
    """Most models loaded at once (0 = no limit)."""
    max_body_bytes: int = 16 * 2**20
    max_tokens_cap: int = 8192
    """No request generates more tokens than this (max_tokens is clamped)."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed by CORS (none: CORS headers are not sent)."""
    request_timeout: float | None = None
    """Seconds after which a request is cancelled (None = never)."""
    load_timeout: float = 600.0
    """Seconds a request waits for its model to load (or for room to load it)."""
    any_model_name: bool = False
    """Answer a request that names an unknown model with the only model
    (llama-server's behaviour): set for one model given on the command line;
    a models file keeps unknown names a 404."""
    _answered_names: set[str] = dataclasses.field(default_factory=set, repr=False,
                                                  compare=False)

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("no models configured")
        seen: dict[str, str] = {}
        for entry in self.models:
            for name in entry.names:
                if name in seen:
                    raise ConfigError(f"model name {name!r} is used by both {seen[name]!r} "
                                      f"and {entry.name!r}")
                seen[name] = entry.name
        if self.max_loaded < 0:
            raise ConfigError("max_loaded must be >= 0 (0 = no limit)")
        if self.max_body_bytes < 1024:
            raise ConfigError("max_body_bytes must be at least 1024")
        if self.max_tokens_cap < 1:
            raise ConfigError("max_tokens_cap must be >= 1")

    def find(self, name: str) -> ModelEntry | None:
        """The model called ``name`` (its name or an alias); None if there is none."""
        for entry in self.models:
            if name in entry.names:
                return entry
        return None

    def resolve(self, name: str) -> ModelEntry | None:
        """:meth:`find`, or the only model when :attr:`any_model_name` is set
        (each unknown name is logged once, for the first 256 names)."""
        found = self.find(name)
        if found is None and self.any_model_name and len(self.models) == 1:
            found = self.models[0]
            if name not in self._answered_names and len(self._answered_names) < 256:
                self._answered_names.add(name)  # bounded: clients choose the names
                log.warning("requests for model %r are answered by %r, the only model "
                            "served", name, found.name)
        return found


def entry_from_args(name: str, argv: Sequence[str], *, settings: Mapping[str, Any] | None = None,
                    aliases: Sequence[str] = (), ttl: float = 0.0) -> ModelEntry:
    """A model entry from llama.cpp flags (``-m PATH -c 8192 -np 4 ...``) and
    ``settings`` by field or long-flag name (the models file's keys)."""
    try:
        a = model_flag_parser().parse_args(list(argv))
    except ConfigError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    return entry_from_namespace(name, a, settings=settings, aliases=aliases, ttl=ttl)


def entry_from_namespace(name: str, a: argparse.Namespace, *,
                         settings: Mapping[str, Any] | None = None,
                         aliases: Sequence[str] = (), ttl: float = 0.0) -> ModelEntry:
    """A model entry from parsed llama.cpp flags (:func:`model_flag_parser`'s
    arguments, which ``llama-cffi serve`` shares) and extra ``settings``."""
    try:
        mp = flags.model_params(a)
        cp = flags.context_params(a, default_n_ctx=None)
        sp = flags.sampling_params(a, SamplingParams())
        spec = from_args(SpeculativeParams, a)
        given = _route(name, settings or {})
        mp = mp.replace(**given[0]) if given[0] else mp
        cp = cp.replace(**given[1]) if given[1] else cp
        spec = spec.replace(**given[2]) if given[2] else spec
        sp = sp.replace(**given[3]) if given[3] else sp
    except SystemExit as exc:  # flags' own conflicts
        raise ConfigError(f"model {name!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None
    if cp.n_seq_max is None:  # llama-server's automatic setting: 4 slots, one KV cache
        cp = cp.replace(n_seq_max=DEFAULT_PARALLEL)
        if cp.kv_unified is None:
            cp = cp.replace(kv_unified=True)  # every slot may use the whole context
    # -np N given: each slot has its own KV stream of n_ctx / N cells, as in
    # llama-server. A slot's cells then stay in position order, so a request's
    # answer never depends on what other slots hold; in one unified cache, new
    # cells may land in holes other slots left, and attention (flash attention
    # accumulates V in cell order, in F16) rounds differently: greedy answers
    # could change after unrelated requests.
    if cp.n_ctx is None:
        cp = cp.replace(n_ctx=DEFAULT_N_CTX)
    rpc = tuple(s.strip() for s in (a.rpc or "").split(",") if s.strip())
    mmproj = getattr(a, "mmproj", None)
    return ModelEntry(name=name, model=str(a.model), aliases=tuple(aliases), ttl=float(ttl),
                      model_params=mp, context_params=cp, speculative=spec, sampling=sp,
                      rpc=rpc, mmproj=str(mmproj) if mmproj else None)


def _route(name: str, settings: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    by_flag = _flag_names()
    out: tuple[dict[str, Any], ...] = ({}, {}, {}, {})
    for key, value in settings.items():
        field = key.replace("-", "_")
        for i, cls in enumerate(_PARAM_CLASSES):
            names = cls.field_names() | set(cls.ALIASES)
            if field in names:
                out[i][field] = value
                break
        else:
            if key in by_flag:
                target = by_flag[key]
                for i, cls in enumerate(_PARAM_CLASSES):
                    if target in cls.field_names():
                        out[i][target] = value
                        break
            else:
                raise ConfigError(f"model {name!r}: unknown setting {key!r} (not a field of "
                                  "ModelParams, ContextParams, SamplingParams or "
                                  "SpeculativeParams, nor a llama.cpp flag)")
    return out


_MODEL_KEYS = {"model", "aliases", "ttl", "args", "mmproj"}
_SERVER_KEYS = ({f.name for f in dataclasses.fields(ServerConfig)}
                - {"models", "any_model_name", "_answered_names"})


def load_config(path: str | os.PathLike[str], **overrides: Any) -> ServerConfig:
    """Read a models file (TOML); ``overrides`` (server settings) win over its values."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the models file {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the models file {p} is not valid TOML: {exc}") from None
    server = data.pop("server", {})
    tables = data.pop("models", None)
    if data:
        raise ConfigError(f"{p}: unknown top-level tables {sorted(data)} (expected [server] "
                          "and [models.NAME])")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{p}: no [models.NAME] tables")
    entries = []
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{p}: models.{name} must be a table")
        if "model" not in table:
            raise ConfigError(f"{p}: models.{name} has no 'model' (a GGUF path or registry name)")
        settings = {k: v for k, v in table.items() if k not in _MODEL_KEYS}
        args = table.get("args", "")
        argv = shlex.split(args) if isinstance(args, str) else [str(x) for x in args]
        model = str(table["model"])
        if not Path(model).is_absolute() and (p.parent / model).exists():
            model = str(p.parent / model)  # relative to the models file
        if isinstance(table.get("mmproj"), str):
            mmproj = table["mmproj"]
            if not Path(mmproj).is_absolute() and (p.parent / mmproj).exists():
                mmproj = str(p.parent / mmproj)
            argv = [*argv, "--mmproj", mmproj]
        aliases = table.get("aliases", [])
        if isinstance(aliases, str):
            aliases = [aliases]
        entries.append(entry_from_args(name, ["-m", model, *argv], settings=settings,
                                       aliases=[str(x) for x in aliases],
                                       ttl=float(table.get("ttl", 0))))
    unknown = set(server) - _SERVER_KEYS
    if unknown:
        raise ConfigError(f"{p}: unknown [server] settings {sorted(unknown)}; known: "
                          f"{sorted(_SERVER_KEYS)}")
    values = dict(server)
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "cors_origins" in values:
        values["cors_origins"] = tuple(values["cors_origins"])
    return ServerConfig(models=entries, **values)
