"""Embeddings: one vector per text (pooled) or per token, batched over sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..objects.batch import Batch
from ..objects.context import Context
from .._bindings.enums import EnumLike, PoolingType, parse_enum
from ..errors import ContextFullError
from ..objects.model import Model


class Embedder:
    """An embedding context on ``model``.

    pooling: ``"mean"``, ``"cls"``, ``"last"``, ``"rank"`` or ``"none"``
        (token embeddings); ``None`` takes the model's own (``--pooling``).
    n_batch: the most tokens evaluated at once; a text must fit in it (the
        physical batch equals it, as non-causal models need whole sequences).
    n_seq_max: how many texts share one batch.
    """

    def __init__(self, model: Model, *, pooling: EnumLike | None = None, n_batch: int = 2048,
                 n_seq_max: int = 16, **context_params: Any) -> None:
        self.model = model
        params: dict[str, Any] = dict(n_ctx=n_batch * 1, n_batch=n_batch, n_ubatch=n_batch,
                                      n_seq_max=n_seq_max, embeddings=True, kv_unified=True)
        if pooling is not None:
            params["pooling"] = parse_enum(PoolingType, pooling, "pooling")
        params.update(context_params)
        self.ctx = Context(model, **params)
        self._encoder_only = model.has_encoder and not model.has_decoder
        self._batch = Batch(self.ctx.n_batch, n_seq_max=1)

    @property
    def pooling(self) -> PoolingType:
        return self.ctx.pooling

    def close(self) -> None:
        self._batch.close()
        self.ctx.close()

    def __enter__(self) -> Embedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tokens(self, text: str, truncate: bool) -> list[int]:
        vocab = self.model.vocab
        toks = vocab.tokenize(text, add_special=True, parse_special=False)
        limit = self.ctx.n_batch
        if len(toks) > limit:
            if not truncate:
                raise ContextFullError(f"a text of {len(toks)} tokens does not fit the embedding "
                                       f"batch of {limit}; raise n_batch or pass truncate=True")
            toks = toks[:limit]
        return toks

    def embed(self, texts: Sequence[str], *, normalize: bool = True,
              truncate: bool = False) -> np.ndarray | list[np.ndarray]:
        """Pooled: an array of shape (len(texts), n_embd). Pooling ``none``: a
        list of (n_tokens, n_embd) arrays. ``normalize`` scales rows to unit length."""
        ctx, batch = self.ctx, self._batch
        token_lists = [self.tokens(t, truncate) for t in texts]
        pooled = self.pooling != PoolingType.NONE
        out: list[np.ndarray] = []
        i = 0
        while i < len(token_lists):
            batch.clear()
            group: list[tuple[int, int]] = []  # (batch start row, n tokens)
            while (i < len(token_lists) and len(group) < ctx.n_seq_max
                   and batch.n_tokens + len(token_lists[i]) <= batch.capacity):
                start = batch.n_tokens
                for pos, tok in enumerate(token_lists[i]):
                    batch.add(tok, pos, (len(group),), True)
                group.append((start, len(token_lists[i])))
                i += 1
            ctx.clear()
            if self._encoder_only:
                ctx.encode(batch)
            else:
                ctx.decode(batch)
            for s, (start, n) in enumerate(group):
                if pooled:
                    out.append(ctx.seq_embeddings(s).copy())
                else:
                    out.append(np.stack([ctx.embeddings(start + k).copy() for k in range(n)]))
        if normalize:
            out = [v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12) for v in out]
        return np.stack(out) if pooled else out
