"""Batch inference with Ray Data: a callable class for ``Dataset.map_batches``.

Ray creates one :class:`LLMPredictor` per actor (``concurrency=N`` actors);
each holds one :class:`~llama_cffi.api.llm.LLM` with ``n_parallel`` slots and
sends the rows of a batch to its engine at once, so they are decoded together
(continuous batching). Each row is a text prompt or a list of chat messages,
with optional per-row sampling options; each output row gets the generated
``text``, its ``finish_reason``, its ``usage`` and an ``error`` (None, or the
message of what went wrong with that row: a bad row never fails the job)::

    import ray
    from llama_cffi.integrations.ray_data import LLMPredictor

    ds = ray.data.from_items([{"prompt": "Hello"}, {"messages": [...]}])
    out = ds.map_batches(LLMPredictor, concurrency=2, batch_size=16,
                         fn_constructor_kwargs={"model": "smollm2-135m", "n_parallel": 4})

Ray itself is not imported here: the class works on any mapping of columns
(numpy's or Ray's batch format ``"numpy"``, or a pandas DataFrame).

Threads: an LLMPredictor serves one batch at a time (Ray calls it from one
thread per actor); it must not be shared across threads.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..api.llm import LLM
from ..objects import registry
from ..objects.params import ContextParams, ModelParams, SamplingParams

SAMPLING_FIELDS = frozenset(f.name for f in dataclasses.fields(SamplingParams))
"""The per-row options a row may set (SamplingParams' fields: ``max_tokens``,
``temperature``, ``stop``, ``seed``, ``json_schema`` ...)."""

OUTPUT_COLUMNS = ("text", "finish_reason", "prompt_tokens", "completion_tokens", "usage",
                  "error")


class RowError(ValueError):
    """A row that cannot be run (no prompt, unknown option): its message goes into
    the row's ``error`` column."""


def _plain(value: Any) -> Any:
    """A value from a Ray/numpy/pandas batch as plain Python (numpy scalars and
    arrays, Arrow structs read as dicts, nested)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)  # None or NaN


def _options(raw: Any) -> dict[str, Any]:
    """A row's sampling options: a mapping or a JSON object text. Keys whose value
    is None are left out (Arrow gives every row of a struct column every key)."""
    if _missing(raw):
        return {}
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise RowError(f"sampling: not a JSON object: {exc}") from None
    raw = _plain(raw)
    if _missing(raw):  # null (JSON) or NaN (a numpy column of nulls)
        return {}
    if not isinstance(raw, dict):
        raise RowError(f"sampling: expected an object of options, got {type(raw).__name__}")
    opts = {k: v for k, v in raw.items() if v is not None}
    unknown = sorted(set(opts) - SAMPLING_FIELDS)
    if unknown:
        raise RowError(f"sampling: unknown option(s) {', '.join(map(repr, unknown))}; "
                       f"known: {', '.join(sorted(SAMPLING_FIELDS))}")
    if isinstance(opts.get("stop"), list):
        opts["stop"] = tuple(opts["stop"])
    return opts


def _messages(raw: Any) -> list[dict[str, Any]]:
    msgs = _plain(raw)
    if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
        raise RowError("messages: expected a non-empty list of {role, content} objects")
    return [{k: v for k, v in m.items() if v is not None} for m in msgs]


class LLMPredictor:
    """One model per Ray actor; ``__call__`` runs a batch of rows on it.

    model: a GGUF path or a registry name (``"smollm2-135m"``; fetched on the
        actor's machine when missing there).
    model_params, context_params: as :class:`~llama_cffi.api.llm.LLM` takes
        them (``-ngl``, ``-c``, ``-t`` ...: the flags of llama.cpp).
    n_parallel: slots (llama.cpp's ``-np``, ContextParams' ``n_seq_max``): the
        rows of a batch decoded together; give ``batch_size`` a multiple of it.
        Unless ``context_params`` sets ``n_ctx``, each slot gets 2048 tokens.
    n_threads: CPU threads of each decode (``-t``); on one machine, give each
        actor its share of the cores (2 actors on 8 cores: 4), since two
        actors' OpenMP teams on the same cores slow both down many times.
    sampling: the defaults of every row (a row's own options override them).
    prompt_column, messages_column, sampling_column: the input columns (a row
        has a prompt or messages; the sampling column is optional).
    row_timeout: seconds after which a row is cancelled (finish_reason
        ``"cancelled"``); None: no limit.
    llm_kwargs: more :class:`LLM` keyword arguments (``mmproj=``, ``draft_model=``).

    Output columns: the input's columns, then ``text`` (the reply: a chat row's
    content), ``finish_reason``, ``prompt_tokens``, ``completion_tokens``,
    ``usage`` (an object of the three token counts) and ``error`` (None, or
    the row's error message; its text is then "" and finish_reason ``"error"``).
    """

    def __init__(self, model: str | os.PathLike[str], *,
                 model_params: ModelParams | Mapping[str, Any] | None = None,
                 context_params: ContextParams | Mapping[str, Any] | None = None,
                 n_parallel: int = 4, n_threads: int | None = None,
                 sampling: SamplingParams | Mapping[str, Any] | None = None,
                 prompt_column: str = "prompt", messages_column: str = "messages",
                 sampling_column: str = "sampling", row_timeout: float | None = None,
                 **llm_kwargs: Any) -> None:
        if n_parallel < 1:
            raise ValueError(f"n_parallel must be at least 1, got {n_parallel}")
        mp = model_params if isinstance(model_params, ModelParams) else \
            ModelParams.from_kwargs(None, **dict(model_params or {}))
        cp = context_params if isinstance(context_params, ContextParams) else \
            ContextParams.from_kwargs(None, **dict(context_params or {}))
        cp = cp.replace(n_seq_max=n_parallel)
        if cp.n_ctx is None:
            cp = cp.replace(n_ctx=2048 * n_parallel)
        if n_threads is not None:
            cp = cp.replace(n_threads=n_threads, n_threads_batch=n_threads)
        sp = sampling if isinstance(sampling, SamplingParams) or sampling is None else \
            SamplingParams.from_kwargs(None, **dict(sampling))
        self.llm = LLM(registry.resolve(model), model_params=mp, context_params=cp,
                       sampling=sp, **llm_kwargs)
        self.n_parallel = n_parallel
        self.columns = (prompt_column, messages_column, sampling_column)
        self.row_timeout = row_timeout
        self._pool = ThreadPoolExecutor(max_workers=n_parallel,
                                        thread_name_prefix="llama-cffi-ray-row")

    def close(self) -> None:
        """Free the model (Ray ends the actor's process anyway when the job ends)."""
        self._pool.shutdown(wait=True)
        self.llm.close()

    def __del__(self) -> None:  # an actor's predictor lives until its process ends
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: nothing to report to
            pass

    # -- one row ---------------------------------------------------------------------------

    def run_row(self, prompt: Any, messages: Any, options: Any) -> dict[str, Any]:
        """Generate for one row; its errors become the row's ``error`` value."""
        try:
            opts = _options(options)
            if not _missing(messages) and not (isinstance(messages, (list, np.ndarray))
                                               and len(messages) == 0):
                done = self.llm.chat(_messages(messages), timeout=self.row_timeout, **opts)
                text = done.content if done.content is not None else done.text
            elif isinstance(prompt, str):
                done = self.llm.complete(prompt, timeout=self.row_timeout, **opts)
                text = done.text
            elif _missing(prompt):
                raise RowError(f"the row has neither {self.columns[0]!r} nor "
                               f"{self.columns[1]!r}")
            else:
                raise RowError(f"{self.columns[0]}: expected text, got {type(prompt).__name__}")
        except Exception as exc:  # noqa: BLE001 - the row's error, not the job's
            return {"text": "", "finish_reason": "error", "prompt_tokens": 0,
                    "completion_tokens": 0, "error": f"{type(exc).__name__}: {exc}"}
        u = done.usage
        return {"text": text, "finish_reason": done.finish_reason,
                "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
                "error": None}

    # -- a batch ---------------------------------------------------------------------------

    def __call__(self, batch: Any) -> dict[str, Any]:
        """Run every row of ``batch`` (a mapping of columns or a pandas DataFrame);
        the rows go to the engine together (``n_parallel`` at a time)."""
        columns = _columns(batch)
        n = len(next(iter(columns.values()))) if columns else 0
        none: Sequence[Any] = [None] * n
        prompt_col, messages_col, sampling_col = self.columns
        prompts = columns.get(prompt_col, none)
        messages = columns.get(messages_col, none)
        options = columns.get(sampling_col, none)
        futures = [self._pool.submit(self.run_row, prompts[i], messages[i], options[i])
                   for i in range(n)]
        rows = [f.result() for f in futures]
        out: dict[str, Any] = dict(columns)
        for key in ("text", "finish_reason", "error"):
            out[key] = np.array([r[key] for r in rows], dtype=object)
        for key in ("prompt_tokens", "completion_tokens"):
            out[key] = np.array([r[key] for r in rows], dtype=np.int64)
        out["usage"] = np.array([{"prompt_tokens": r["prompt_tokens"],
                                  "completion_tokens": r["completion_tokens"],
                                  "total_tokens": r["prompt_tokens"] + r["completion_tokens"]}
                                 for r in rows], dtype=object)
        return out


def _columns(batch: Any) -> dict[str, Sequence[Any]]:
    """The columns of a batch: a mapping of arrays/lists, or a pandas DataFrame."""
    if hasattr(batch, "to_dict") and hasattr(batch, "columns") and not isinstance(batch, Mapping):
        return {str(k): list(v) for k, v in batch.to_dict("list").items()}  # pandas
    if not isinstance(batch, Mapping):
        raise TypeError(f"a batch is a mapping of columns or a pandas DataFrame, "
                        f"got {type(batch).__name__}")
    return {str(k): v for k, v in batch.items()}
