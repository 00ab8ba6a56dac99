"""``SpeculativeParams`` (``--spec-*``) and the keyword router of ``LLM(...)``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from ..._bindings.enums import GGMLType, parse_enum
from .base import _enum_parser, _enum_text, _float, _int, _Params
from .context import _KV_TYPES, ContextParams
from .fields import document, format_names, param, parse_names
from .model import ModelParams
from .sampling import SamplingParams

# -- speculative decoding ----------------------------------------------------------------------


@document
@dataclasses.dataclass(frozen=True, kw_only=True)
class SpeculativeParams(_Params):
    """Speculative decoding (llama.cpp's ``--spec-*`` flags)."""

    spec_type: str | None = param(
        None, "--spec-type", parse=str, choices=("draft-simple", "ngram-simple"),
        help="proposer: draft-simple (needs draft_model) or ngram-simple; "
             "default draft-simple when a draft model is given")
    draft_model: str | None = param(None, "-md", "--model-draft", "--spec-draft-model",
                                    parse=str, metavar="PATH",
                                    help="draft model (path or registry name)")
    draft_n_max: int = param(3, "--spec-draft-n-max", "--draft-max", "--draft", parse=int,
                             metavar="N", help="most tokens drafted per step")
    draft_n_min: int = param(0, "--spec-draft-n-min", "--draft-min", parse=int, metavar="N",
                             help="fewest drafted tokens worth verifying")
    draft_p_min: float = param(0.0, "--spec-draft-p-min", "--draft-p-min", parse=float,
                               metavar="P", help="stop drafting below this top probability")
    draft_n_gpu_layers: int | None = param(
        None, "-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft", parse=int, metavar="N",
        help="layers of the draft model on GPU/other devices")
    draft_devices: Sequence[str] | None = param(
        None, "-devd", "--device-draft", parse=parse_names, format=format_names,
        metavar="DEV,...", help="devices for the draft model")
    draft_type_k: GGMLType | str | None = param(
        None, "-ctkd", "--cache-type-k-draft", parse=_enum_parser(GGMLType, "type_k"),
        format=_enum_text, choices=_KV_TYPES, help="draft KV cache type for K")
    draft_type_v: GGMLType | str | None = param(
        None, "-ctvd", "--cache-type-v-draft", parse=_enum_parser(GGMLType, "type_v"),
        format=_enum_text, choices=_KV_TYPES, help="draft KV cache type for V")
    ngram_size_n: int = param(12, "--spec-ngram-simple-size-n", parse=int, metavar="N",
                              help="n-gram length looked up by ngram-simple")
    ngram_size_m: int = param(48, "--spec-ngram-simple-size-m", parse=int, metavar="N",
                              help="tokens proposed by ngram-simple")

    ALIASES = {"speculative": "spec_type", "model_draft": "draft_model"}

    def __post_init__(self) -> None:
        kind = self.spec_type
        if kind is not None:
            kind = {"draft": "draft-simple", "ngram": "ngram-simple"}.get(kind, kind)
            if kind not in ("draft-simple", "ngram-simple"):
                raise ValueError(f"unknown speculative type {self.spec_type!r}: use "
                                 "'draft-simple' or 'ngram-simple' (MTP and EAGLE-3 need "
                                 "models that are not supported here yet)")
            self._set("spec_type", kind)
        if self.draft_model is not None:
            self._set("draft_model", str(self.draft_model))
        self._set("draft_n_max", _int(self.draft_n_max, "draft_n_max", minimum=1))
        self._set("draft_n_min", _int(self.draft_n_min, "draft_n_min", minimum=0))
        self._set("draft_p_min", _float(self.draft_p_min, "draft_p_min", 0.0, 1.0))
        if self.draft_n_gpu_layers is not None:
            self._set("draft_n_gpu_layers", _int(self.draft_n_gpu_layers, "draft_n_gpu_layers"))
        if self.draft_devices is not None:
            self._set("draft_devices", tuple(str(d) for d in self.draft_devices))
        for name in ("draft_type_k", "draft_type_v"):
            value = getattr(self, name)
            if value is not None:
                self._set(name, parse_enum(GGMLType, value, name))
        self._set("ngram_size_n", _int(self.ngram_size_n, "ngram_size_n", minimum=1))
        self._set("ngram_size_m", _int(self.ngram_size_m, "ngram_size_m", minimum=1))

    @property
    def enabled(self) -> bool:
        return self.spec_type is not None or self.draft_model is not None


def split_kwargs(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any],
                                                      dict[str, Any], dict[str, Any]]:
    """Sort llama-cpp-python-style keywords into (model, context, speculative,
    sampling) keywords -- the one place ``LLM(path, n_ctx=..., n_gpu_layers=...)``
    is mapped onto the parameter objects. Unknown names raise TypeError."""
    model: dict[str, Any] = {}
    ctx: dict[str, Any] = {}
    spec: dict[str, Any] = {}
    sampling: dict[str, Any] = {}
    targets = ((ModelParams, model), (ContextParams, ctx), (SpeculativeParams, spec),
               (SamplingParams, sampling))
    for key, value in kwargs.items():
        for cls, out in targets:
            names = cls.field_names() | set(cls.ALIASES)
            if cls is ModelParams:
                names |= {"use_mmap", "use_mlock"}
            if key in names:
                out[key] = value
                break
        else:
            raise TypeError(f"unknown parameter {key!r}: not a field of ModelParams, "
                            "ContextParams, SpeculativeParams or SamplingParams")
    return model, ctx, spec, sampling
