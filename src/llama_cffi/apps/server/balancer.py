"""``/health`` and ``/slots`` as llama-server answers them, for balancers that
front llama-server (paddler and others read a server's slots and health).

What llama-server does (tools/server/ of the pinned llama.cpp), and what we do:

- ``GET /health`` (and ``/v1/health``), open without the API key: 200
  ``{"status": "ok"}`` once ready; while its model loads, 503
  ``{"error": {"message": "Loading model", "type": "unavailable_error",
  "code": 503}}``. Ours loads models on demand: 503 with the same body while
  a model is loading and none is loaded yet (a request sent now would wait
  for the load), else 200.
- ``GET /slots`` (on by default; ``--no-slots`` turns it off): a list with
  one object per slot: ``id``, ``n_ctx`` (the slot's context), ``speculative``,
  ``is_processing``, and once the slot has served a task ``id_task``,
  ``n_prompt_tokens``, ``n_prompt_tokens_processed``, ``n_prompt_tokens_cache``,
  ``params`` (the task's sampling settings, the metrics-only set) and
  ``next_token`` (a one-element list: ``has_next_token``, ``has_new_line``,
  ``n_remain``, ``n_decoded``). ``?fail_on_no_slot=1``: 503
  ``{"error": {"message": "no slot available", "type": "unavailable_error",
  "code": 503}}`` when no slot is idle. Ours adds ``model`` (the model's name)
  and ``n_cached_tokens`` to each slot; with several models, ``?model=NAME``
  keeps one model's slots. A slot that has served a request shows the
  server's default sampling settings as ``params`` once the request is over
  (the engine keeps no finished request).

Reads slots from the event loop while the engine thread runs: each value is
one attribute read (a snapshot, possibly a step old), never a lock.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...api.llm import LLM
from ...engine.slot import Slot
from ...objects.params import SamplingParams
from .config import ModelEntry
from .state import ServerState

UNAVAILABLE = "unavailable_error"
DEFAULT_SLOTS = 4  # LLM's slots without -np (llama-server's automatic setting)


def unavailable(message: str) -> Response:
    """llama-server's 503 body (``format_error_response`` with ERROR_TYPE_UNAVAILABLE)."""
    return JSONResponse({"error": {"code": 503, "message": message, "type": UNAVAILABLE}},
                        status_code=503)


def params_json(sp: SamplingParams, n_predict: int) -> dict[str, Any]:
    """A task's sampling settings under llama-server's names (``task_params::to_json``
    with ``only_metrics``, the set /slots shows)."""
    samplers = ["typ_p" if s == "typical_p" else str(s) for s in sp.samplers]
    return {
        "seed": sp.seed if sp.seed is not None else 0xFFFFFFFF,
        "temperature": sp.temperature, "dynatemp_range": sp.dynatemp_range,
        "dynatemp_exponent": sp.dynatemp_exponent, "top_k": sp.top_k, "top_p": sp.top_p,
        "min_p": sp.min_p, "top_n_sigma": sp.top_n_sigma,
        "xtc_probability": sp.xtc_probability, "xtc_threshold": sp.xtc_threshold,
        "typical_p": sp.typical_p, "repeat_last_n": sp.repeat_last_n,
        "repeat_penalty": sp.repeat_penalty, "presence_penalty": sp.presence_penalty,
        "frequency_penalty": sp.frequency_penalty, "dry_multiplier": sp.dry_multiplier,
        "dry_base": sp.dry_base, "dry_allowed_length": sp.dry_allowed_length,
        "dry_penalty_last_n": sp.dry_penalty_last_n, "mirostat": int(sp.mirostat),
        "mirostat_tau": sp.mirostat_tau, "mirostat_eta": sp.mirostat_eta,
        "adaptive_target": sp.adaptive_target, "adaptive_decay": sp.adaptive_decay,
        "max_tokens": n_predict, "n_predict": n_predict, "n_keep": 0, "n_discard": 0,
        "ignore_eos": sp.ignore_eos, "stream": False,
        "n_probs": sp.logprobs or 0, "min_keep": sp.min_keep,
        "chat_format": "Content-only", "reasoning_format": "none",
        "reasoning_in_content": False, "generation_prompt": "", "samplers": samplers,
        "speculative.types": "none", "timings_per_token": False,
        "post_sampling_probs": False, "backend_sampling": bool(sp.backend_sampling),
        "lora": [],
    }


def _number(value: Any, default: float) -> Any:
    return default if value is None else value


def slot_json(slot: Slot, llm: LLM, model: str) -> dict[str, Any]:
    """One slot as llama-server's ``server_slot::to_json`` (metrics-only) writes it,
    plus ``model`` and ``n_cached_tokens``."""
    req = slot.req  # one read: the engine thread may end the request meanwhile
    out: dict[str, Any] = {
        "id": slot.seq_id, "n_ctx": llm.ctx.n_ctx_seq,
        "speculative": llm.engine.proposer is not None, "is_processing": req is not None,
    }
    usage = getattr(slot, "usage", None)  # set when the slot first served a request
    if usage is not None:
        sp = req.sampling if req is not None else llm.sampling
        n_predict = sp.max_tokens if sp.max_tokens is not None else -1
        n_decoded = usage.completion_tokens if req is None else len(getattr(slot, "out", ()))
        out.update({
            "id_task": id(req) % 2**31 if req is not None else slot.seq_id,
            "n_prompt_tokens": usage.prompt_tokens,
            "n_prompt_tokens_processed": usage.prompt_tokens - usage.cached_tokens,
            "n_prompt_tokens_cache": usage.cached_tokens,
            "params": {k: _number(v, 0) for k, v in params_json(sp, n_predict).items()},
            "next_token": [{
                "has_next_token": req is not None,
                "has_new_line": "\n" in getattr(slot, "text", ""),
                "n_remain": (n_predict - n_decoded) if n_predict >= 0 else -1,
                "n_decoded": n_decoded,
            }],
        })
    out["model"] = model
    out["n_cached_tokens"] = len(slot.cache)
    return out


def unloaded_slots(entry: ModelEntry) -> list[dict[str, Any]]:
    """The idle slots a model not loaded yet will have (a request loads it and gets
    one), so a balancer counts them; ``n_ctx`` 0 where it comes from the model."""
    cp = entry.context_params
    n_seq = cp.n_seq_max or DEFAULT_SLOTS
    n_ctx = cp.n_ctx or 0
    if n_ctx and not cp.kv_unified:
        n_ctx //= n_seq
    return [{"id": i, "n_ctx": n_ctx, "speculative": entry.speculative.draft_model is not None,
             "is_processing": False, "model": entry.name, "n_cached_tokens": 0}
            for i in range(n_seq)]


class BalancerRoutes:
    """The handlers of ``/health`` and ``/slots`` (used from the event loop only)."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def routes(self) -> list[Route]:
        return [Route("/health", self.health, methods=["GET"]),
                Route("/v1/health", self.health, methods=["GET"]),
                Route("/slots", self.slots, methods=["GET"])]

    async def health(self, request: Request) -> Response:
        manager = self.state.manager
        if manager._loading and not manager.loaded:  # noqa: SLF001 - read only
            return unavailable("Loading model")
        return JSONResponse({"status": "ok"})

    async def slots(self, request: Request) -> Response:
        wanted = request.query_params.get("model") or None
        name = self.state.manager.entry(wanted).name if wanted else None
        out: list[dict[str, Any]] = []
        loaded = dict(self.state.manager.loaded)
        for entry in self.state.config.models:
            if name is not None and entry.name != name:
                continue
            lm = loaded.get(entry.name)
            if lm is not None:
                out.extend(slot_json(slot, lm.llm, entry.name) for slot in lm.llm.engine.slots)
            else:
                out.extend(unloaded_slots(entry))
        if request.query_params.get("fail_on_no_slot"):
            if not any(not s["is_processing"] for s in out) and out:
                return unavailable("no slot available")
        return JSONResponse(out)
