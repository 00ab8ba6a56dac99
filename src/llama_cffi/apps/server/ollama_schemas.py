"""Ollama's request bodies and how they map onto this server.

- ``options`` become :class:`~llama_cffi.SamplingParams` fields
  (``num_predict`` -> ``max_tokens``, the other sampling names are
  llama.cpp's own); any SamplingParams field is accepted there as well
  (``dry_multiplier``, ``xtc_probability`` ...). Ollama's load-time options
  (``num_ctx``, ``num_gpu``, ``num_thread`` ...) are ignored with a log line:
  here they are set per model in the models file. Other names are refused
  with a 400 naming them.
- ``keep_alive`` (``"5m"``, ``"1h30m"``, a number of seconds; 0 unloads after
  the request, negative keeps the model loaded for good) becomes seconds for
  :meth:`ModelManager.use`.
- ``format``: ``"json"`` or a JSON schema, as a JSON-schema constraint.
- ``template`` (``/api/generate``): Ollama's templates are Go templates; the
  subset most of them use is rendered here (``{{ .System }}``,
  ``{{ .Prompt }}``, ``{{ .Response }}``, ``{{ if .X }} ... {{ else }} ...
  {{ end }}``, ``{{-``/``-}}`` trimming); anything else is a 400.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ...objects.params import SamplingParams
from .errors import ApiError, bad_request, validation_message

log = logging.getLogger("llama_cffi.server")

_B = TypeVar("_B", bound="OllamaBody")

OPTION_NAMES = {"num_predict": "max_tokens"}
"""Ollama option names that differ from SamplingParams' (the rest are the same:
temperature, top_k, top_p, min_p, typical_p, seed, stop, repeat_penalty,
repeat_last_n, presence_penalty, frequency_penalty, mirostat, mirostat_tau,
mirostat_eta)."""

IGNORED_OPTIONS = frozenset({
    "num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "f16_kv", "logits_all",
    "vocab_only", "use_mmap", "use_mlock", "num_thread", "numa", "embedding_only", "num_keep",
    "penalize_newline", "tfs_z", "num_gqa", "rope_frequency_base", "rope_frequency_scale",
})
"""Ollama options that are load-time settings of a model here (or gone from
llama.cpp): ignored, with a log line."""

SAMPLING_NAMES = SamplingParams.field_names() | frozenset(SamplingParams.ALIASES)


class OllamaBody(BaseModel):
    """Fields every Ollama request may carry."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    name: str | None = None  # older clients' spelling of ``model`` (/api/show, /api/delete)
    keep_alive: float | str | None = None

    @classmethod
    def parse(cls: type[_B], data: Any) -> _B:
        if not isinstance(data, dict):
            raise bad_request(f"the request body must be a JSON object, not "
                              f"{type(data).__name__}")
        if isinstance(data.get("keep_alive"), bool):
            raise bad_request("keep_alive must be a duration (\"5m\") or a number of seconds",
                              "keep_alive")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            message, field = validation_message(exc.errors())
            raise bad_request(message, field) from None

    @property
    def model_name(self) -> str:
        name = self.model or self.name
        if not name:
            raise bad_request("model is required", "model")
        return name


class _Generate(OllamaBody):
    stream: bool | None = True
    """NDJSON streaming, on unless false (null too means on, as in Ollama)."""
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    think: bool | str | None = None


class ChatBody(_Generate):
    messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


class GenerateBody(_Generate):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class EmbedBody(OllamaBody):
    input: str | list[str] | None = None
    truncate: bool = True
    dimensions: int | None = None
    options: dict[str, Any] | None = None


class EmbeddingsBody(OllamaBody):
    prompt: str | None = None
    options: dict[str, Any] | None = None


class ShowBody(OllamaBody):
    verbose: bool = False


# -- keep_alive ----------------------------------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
          "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_keep_alive(value: float | str | None) -> float | None:
    """Seconds (< 0: forever, 0: unload after the request) from Ollama's
    ``keep_alive``: a number of seconds or a Go duration (``"5m"``,
    ``"1h30m"``, ``"-1m"``); None: the model's configured ttl."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            seconds = float(text)  # "300", "-1": seconds, as a number would be
        except ValueError:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            seconds, pos = 0.0, 0
            for m in _DURATION.finditer(body):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNITS[m.group(2)]
                pos = m.end()
            if pos != len(body) or not body:
                raise bad_request(f"keep_alive {value!r} is not a duration (\"5m\", \"1h30m\", "
                                  "\"-1\") or a number of seconds", "keep_alive") from None
            seconds *= sign
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise bad_request("keep_alive must be a number of seconds or a duration", "keep_alive")
    return -1.0 if seconds < 0 else seconds


# -- options -> SamplingParams -----------------------------------------------------------------

def sampling_overrides(options: dict[str, Any] | None, *, cap: int,
                       default_max: int) -> dict[str, Any]:
    """SamplingParams fields of Ollama's ``options`` (see the module docstring);
    a 400 naming an unknown option or a bad ``num_predict``."""
    kw: dict[str, Any] = {}
    ignored = []
    for key, value in (options or {}).items():
        if value is None:
            continue
        if key in IGNORED_OPTIONS:
            ignored.append(key)
            continue
        field = OPTION_NAMES.get(key, key)
        if field not in SAMPLING_NAMES:
            raise bad_request(f"options.{key}: unknown option", f"options.{key}")
        kw[field] = value
    if ignored:
        log.info("ignoring Ollama options %s: context size, threads and offload are set per "
                 "model in the models file", ", ".join(sorted(ignored)))
    if isinstance(kw.get("seed"), int) and not isinstance(kw["seed"], bool) and kw["seed"] < 0:
        del kw["seed"]  # Ollama's -1: a random seed, the default here
    n = kw.pop("max_tokens", None)
    if n is None:
        n = kw.pop("n_predict", None)
    kw.pop("n_predict", None)
    if n is None:
        n = -1 if default_max < 0 else default_max
    if isinstance(n, bool) or not isinstance(n, int):
        raise bad_request(f"options.num_predict must be an integer, got {n!r}",
                          "options.num_predict")
    if n < -2:
        raise bad_request(f"options.num_predict must be >= -2 (-1: no limit, -2: fill the "
                          f"context), got {n}", "options.num_predict")
    kw["max_tokens"] = cap if n < 0 else min(n, cap)
    return kw


def make_sampling(base: SamplingParams, kw: dict[str, Any]) -> SamplingParams:
    """``base`` with ``kw`` applied; a 400 naming the option for a bad value."""
    try:
        return SamplingParams.from_kwargs(base, **kw)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        field = next((k for k in kw if message.startswith(k)), None)
        reverse = {v: k for k, v in OPTION_NAMES.items()}
        name = reverse.get(field, field) if field else None
        raise ApiError(400, f"invalid options: {message}",
                       param=f"options.{name}" if name else "options") from None


def format_schema(fmt: str | dict[str, Any] | None) -> Any:
    """The JSON schema that Ollama's ``format`` asks for (None: free text)."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "object"}
    if isinstance(fmt, dict):
        return fmt
    raise bad_request(f"format must be \"json\" or a JSON schema object, got {fmt!r}", "format")


def check_think(think: bool | str | None) -> None:
    if think not in (None, False, "", "false", "none"):
        raise bad_request("think: this server does not separate a model's thinking from its "
                          "answer; leave think out or set it to false", "think")


# -- Go templates (the common subset) -------------------------------------------------------

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def render_go_template(template: str, values: dict[str, str]) -> str:
    """Render the subset of Go's text/template that Ollama templates mostly use
    (see the module docstring); a 400 for anything else."""
    out: list[str] = []
    stack: list[tuple[bool, bool]] = []  # open ifs: (a branch was taken, parent renders)
    active = True
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        if active:
            out.append(text)
        trim_next = bool(m.group(3))
        pos = m.end()
        action = m.group(2)
        var = re.fullmatch(r"\.(\w+)", action)
        cond = re.fullmatch(r"if\s+\.(\w+)", action)
        if var:
            if active:
                out.append(_value(values, var.group(1)))
        elif cond:
            taken = active and bool(_value(values, cond.group(1)))
            stack.append((taken, active))
            active = taken
        elif action == "else" and stack:
            taken, parent = stack[-1]
            active = parent and not taken
            stack[-1] = (True, parent)
        elif action == "end" and stack:
            active = stack.pop()[1]
        else:
            raise bad_request(f"template: the action {{{{ {action} }}}} is not supported (only "
                              "{{ .System }}, {{ .Prompt }}, {{ .Response }}, {{ if .X }}, "
                              "{{ else }}, {{ end }})", "template")
    if stack:
        raise bad_request("template: an {{ if }} has no {{ end }}", "template")
    rest = template[pos:]
    out.append(rest.lstrip() if trim_next else rest)
    return "".join(out)


def _value(values: dict[str, str], name: str) -> str:
    if name not in values:
        raise bad_request(f"template: unknown variable .{name} (known: "
                          f"{', '.join('.' + k for k in values)})", "template")
    return values[name]
