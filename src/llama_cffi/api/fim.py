"""Fill-in-the-middle prompts, built as llama-server's ``/infill`` builds them.

``format_infill`` follows ``format_prompt_infill`` in llama.cpp's
``tools/server/server-common.cpp`` (the repo-level pattern of Qwen2.5-Coder,
arXiv 2409.12186)::

    [FIM_REP]myproject\\n [FIM_SEP]filename\\n ... [FIM_PRE]prefix[FIM_SUF]suffix[FIM_MID]prompt

with the prefix cut to its last ``3/4 n_batch`` tokens, the suffix to its
first ``n_batch/4 - 2 - len(prompt)``, and the repo-level extra context
kept only while ``n_ctx - n_batch - 2 * n_predict`` leaves room, as there.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..objects.vocab import Vocab

_CHUNK_SEPARATOR = "\n\n--- snippet ---\n\n"  # llama-server's separator without FIM_SEP


def fim_tokens(vocab: Vocab) -> tuple[int, int, int]:
    """The model's FIM prefix, suffix and middle tokens; ValueError naming
    the missing ones if the model has none (it was not trained for infill)."""
    pre, suf, mid = vocab.fim_pre, vocab.fim_suf, vocab.fim_mid
    missing = [name for name, t in (("prefix", pre), ("suffix", suf), ("middle", mid))
               if t is None]
    if missing or pre is None or suf is None or mid is None:
        raise ValueError(
            f"suffix= (fill-in-the-middle) needs the model's FIM tokens, and this model has no "
            f"FIM {', '.join(missing)} token (tokenizer.ggml.fim_pre/suf/mid_token_id): "
            "use a model trained for infill (a code model), or give the ids with "
            "kv_overrides")
    return pre, suf, mid


def format_infill(vocab: Vocab, prefix: str, suffix: str, *, prompt: Sequence[int] = (),
                  extra: Sequence[Mapping[str, str]] = (), n_batch: int = 2048,
                  n_predict: int = -1, n_ctx: int = 4096,
                  spm_infill: bool = False) -> list[int]:
    """The token ids of a fill-in-the-middle prompt (llama-server's ``/infill``).

    prefix, suffix: the text before and after the gap (``input_prefix``,
        ``input_suffix``); prompt: tokens that start the middle (``prompt``).
    extra: further files as ``{"filename": ..., "text": ...}``
        (``input_extra``).
    n_batch, n_predict, n_ctx: the sizes llama-server cuts the parts to
        (``-b``, ``-n``, the slot's context).
    spm_infill: suffix before prefix (``--spm-infill``).
    """
    pre, suf, mid = fim_tokens(vocab)

    def tok(text: str) -> list[int]:
        return vocab.tokenize(text, add_special=False, parse_special=False)

    extra_tokens: list[int] = []
    if vocab.fim_rep is not None:
        extra_tokens += [vocab.fim_rep, *tok("myproject\n")]
    for chunk in extra:
        text = str(chunk.get("text", ""))
        filename = str(chunk.get("filename", "tmp"))
        if vocab.fim_sep is not None:
            extra_tokens += [vocab.fim_sep, *tok(filename + "\n")]
        else:
            extra_tokens += tok(_CHUNK_SEPARATOR)
        extra_tokens += tok(text)
    if vocab.fim_sep is not None:
        extra_tokens += [vocab.fim_sep, *tok("filename\n")]

    prefix_tokens, suffix_tokens = tok(prefix), tok(suffix)
    n_prefix_take = min(len(prefix_tokens), 3 * (n_batch // 4))
    n_suffix_take = min(len(suffix_tokens), max(0, n_batch // 4 - (2 + len(prompt))))
    n_extra_take = min(max(0, n_ctx - n_batch - 2 * n_predict), len(extra_tokens))

    head = [pre, *prefix_tokens[len(prefix_tokens) - n_prefix_take:], *prompt]
    tail = [suf, *suffix_tokens[:n_suffix_take]]
    first, second = (tail, head) if spm_infill else (head, tail)
    out: list[int] = []
    if vocab.add_bos and vocab.bos is not None:
        out.append(vocab.bos)
    out[:0] = extra_tokens[len(extra_tokens) - n_extra_take:]
    return [*out, *first, *second, mid]
