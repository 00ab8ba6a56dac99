"""OpenAI's completions ``logprobs`` object (``tokens``, ``token_logprobs``,
``top_logprobs``, ``text_offset``) made from a :class:`Completion`: the
prompt's entries first when it has them (``echo`` with ``logprobs``), then
the generated tokens'.

The prompt's first listed token gets null values, as OpenAI and
llama-cpp-python give (nothing before it is shown). A BOS token that
tokenization added to a text prompt is not part of the text and is left out
(``skip_bos``); the prompt's listed entries then start at the token after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..engine.results import Completion, TokenLogprob


def _top(e: TokenLogprob, with_chosen: bool) -> dict[str, float]:
    top = {text: lp for _, text, lp in e.top}
    if with_chosen:  # llama-cpp-python's: the chosen token is always among them
        top[e.text] = e.logprob
    return top


def openai_logprobs(c: Completion, piece: Callable[[int], str], *, offset: int | None,
                    skip_bos: int | None = None,
                    with_chosen: bool = False) -> dict[str, Any] | None:
    """The ``logprobs`` of a completions choice, or None when ``c`` has none.

    piece: a token's text (for the prompt's first token, which has no entry).
    offset: the ``text_offset`` of the first generated token (the echoed
        prompt's length with echo); None: right after the listed prompt tokens.
    skip_bos: a BOS token id to leave out when the prompt starts with it.
    with_chosen: each ``top_logprobs`` also holds the chosen token.
    """
    if c.logprobs is None and c.prompt_logprobs is None:
        return None
    tokens: list[str] = []
    values: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []
    prompt = c.prompt_tokens or []
    if c.prompt_logprobs is not None and prompt:
        first = 1 if skip_bos is not None and prompt[0] == skip_bos else 0
        pos = 0
        for i in range(first, len(prompt)):
            e = c.prompt_logprobs[i]
            text = e.text if e is not None else piece(prompt[i])
            tokens.append(text)
            offsets.append(pos)
            pos += len(text)
            if i == first or e is None:
                values.append(None)
                tops.append(None)
            else:
                values.append(e.logprob)
                tops.append(_top(e, with_chosen))
    pos = sum(map(len, tokens)) if offset is None else offset
    for e in c.logprobs or []:
        tokens.append(e.text)
        values.append(e.logprob)
        tops.append(_top(e, with_chosen))
        offsets.append(pos)
        pos += len(e.text)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
            "text_offset": offsets}
