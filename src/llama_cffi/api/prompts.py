"""Prompts as the LLM takes them: text, UTF-8 bytes or token ids; echo text; infill prompts.

Bytes are text (UTF-8, as llama-cpp-python's ``tokenize(b"...")``), never a
sequence of token ids; ``bytearray`` and ``memoryview`` too. A sequence of
token ids must hold integers (numpy integers included): a float or a str in
it raises TypeError instead of being truncated or parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import Any, Union

from ..objects.vocab import Vocab
from . import fim

Prompt = Union[str, bytes, bytearray, memoryview, Sequence[int]]
_BYTES = (bytes, bytearray, memoryview)


def tokenize(vocab: Vocab, prompt: Prompt, *, add_special: bool = True) -> list[int]:
    """Token ids of ``prompt``: text and bytes are tokenized with special-token
    text parsed (a chat template's output); ids are checked.

    add_special: add the BOS the model asks for, unless the text already
    starts with it (a rendered chat template does).
    """
    if isinstance(prompt, _BYTES):
        prompt = bytes(prompt)
    if isinstance(prompt, (str, bytes)):
        bos = vocab.bos
        if add_special and bos is not None and vocab.add_bos:
            bos_bytes = vocab.token_to_piece(bos, special=True)
            starts = prompt.startswith(bos_bytes) if isinstance(prompt, bytes) \
                else prompt.startswith(bos_bytes.decode("utf-8", "replace"))
            if bos_bytes and starts:
                add_special = False  # the text (a chat template) already has it
        return vocab.tokenize(prompt, add_special=add_special, parse_special=True)
    items: Any = prompt
    if not isinstance(items, Sequence) and not hasattr(items, "__array__"):
        raise TypeError(f"prompt must be text, UTF-8 bytes or a sequence of token ids, "
                        f"got {type(items).__name__}")
    out = []
    for t in items:
        if isinstance(t, bool) or not isinstance(t, Integral):
            raise TypeError(f"a prompt given as token ids must hold integers, got {t!r}")
        out.append(vocab.check_token(t))
    return out


def echo_text(vocab: Vocab, prompt: Prompt) -> str:
    """The text ``echo=True`` puts before the output: the prompt as given
    (bytes decoded as UTF-8), or the text of the prompt's token ids."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, _BYTES):
        return bytes(prompt).decode("utf-8", "replace")
    return vocab.detokenize([int(t) for t in prompt])


def infill(vocab: Vocab, prompt: Prompt, suffix: str | bytes, *, n_batch: int,
           n_predict: int, n_ctx: int) -> list[int]:
    """A fill-in-the-middle prompt: ``prompt`` is the text before the gap,
    ``suffix`` the text after it (llama-server's ``input_prefix`` and
    ``input_suffix``); built with the model's FIM tokens as ``/infill`` does.
    ValueError if the model has no FIM tokens."""
    if isinstance(suffix, _BYTES):
        suffix = bytes(suffix).decode("utf-8")
    if not isinstance(suffix, str):
        raise TypeError(f"suffix must be text, got {type(suffix).__name__}")
    if isinstance(prompt, _BYTES):
        prompt = bytes(prompt).decode("utf-8")
    if not isinstance(prompt, str):
        raise TypeError("suffix= (fill-in-the-middle) takes the prompt as text, "
                        f"not {type(prompt).__name__}")
    return fim.format_infill(vocab, prompt, suffix, n_batch=n_batch, n_predict=n_predict,
                             n_ctx=n_ctx)
