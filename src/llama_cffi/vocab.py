"""The vocabulary of a model: tokenizing, detokenizing, special tokens."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._ffi import ffi, lib
from .enums import TokenAttr
from .errors import TokenError

if TYPE_CHECKING:
    from .model import Model


class Vocab:
    """Borrowed view of a model's ``llama_vocab``; keeps its :class:`Model` alive.

    Obtained as ``model.vocab``. Token ids are checked against the vocabulary
    size before they reach C, so a bad id raises :class:`TokenError`.
    """

    def __init__(self, model: Model) -> None:
        self._model = model
        self._local = threading.local()  # per-thread scratch buffer for pieces
        self._n_tokens: int = lib.llama_vocab_n_tokens(self._vocab_ptr())

    def _vocab_ptr(self) -> Any:
        return lib.llama_model_get_vocab(self._model.ptr)

    @property
    def ptr(self) -> Any:
        """The raw ``const llama_vocab *`` (raises ClosedError once the model is closed)."""
        return self._vocab_ptr()

    @property
    def n_tokens(self) -> int:
        """Number of tokens in the vocabulary (``n_vocab``)."""
        return self._n_tokens

    n_vocab = n_tokens

    def __len__(self) -> int:
        return self._n_tokens

    def check_token(self, token: int) -> int:
        """Return ``token`` as int if it is a valid id, else raise TokenError."""
        t = int(token)
        if not 0 <= t < self._n_tokens:
            raise TokenError(
                f"token id {t} is out of range: this vocabulary has ids 0..{self._n_tokens - 1}")
        return t

    # -- tokenizing -------------------------------------------------------

    def tokenize(self, text: str | bytes, *, add_special: bool = True,
                 parse_special: bool = False) -> list[int]:
        """Split ``text`` into token ids.

        add_special: add the BOS/EOS tokens the model asks for (as llama.cpp's
            tools do for a prompt's start).
        parse_special: treat special-token text such as ``<|im_start|>`` as the
            special token instead of plain text.
        """
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        vocab = self.ptr
        capacity = len(data) + 8
        while True:
            buf = ffi.new("llama_token[]", capacity)
            n = lib.llama_tokenize(vocab, data, len(data), buf, capacity, add_special, parse_special)
            if n >= 0:
                return ffi.unpack(buf, n)
            if n == -2147483648 or -n <= capacity:
                raise TokenError(f"could not tokenize a text of {len(data)} bytes")
            capacity = -n

    # -- detokenizing -----------------------------------------------------

    def token_to_piece(self, token: int, *, special: bool = False, lstrip: int = 0) -> bytes:
        """The bytes a single token stands for (may be part of a UTF-8 character).

        special: render special/control tokens as their text (otherwise empty).
        """
        t = self.check_token(token)
        vocab = self.ptr
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = ffi.new("char[]", 256)
        n = lib.llama_token_to_piece(vocab, t, buf, len(buf), lstrip, special)
        if n < 0:
            buf = self._local.buf = ffi.new("char[]", -n)
            n = lib.llama_token_to_piece(vocab, t, buf, len(buf), lstrip, special)
        return ffi.unpack(buf, n)

    def detokenize(self, tokens: Sequence[int], *, remove_special: bool = False,
                   unparse_special: bool = False) -> str:
        """Turn token ids back into text.

        remove_special: drop a leading BOS / trailing EOS the model adds.
        unparse_special: render special tokens as their text.
        """
        ids = [self.check_token(t) for t in tokens]
        vocab = self.ptr
        arr = ffi.new("llama_token[]", ids)
        capacity = max(16, 8 * len(ids))
        while True:
            buf = ffi.new("char[]", capacity)
            n = lib.llama_detokenize(vocab, arr, len(ids), buf, capacity,
                                     remove_special, unparse_special)
            if n >= 0:
                return ffi.unpack(buf, n).decode("utf-8", "replace")
            capacity = -n

    # -- special tokens and attributes ------------------------------------

    def _special(self, fn: Any) -> int | None:
        tok = fn(self.ptr)
        return None if tok < 0 else int(tok)

    @property
    def bos(self) -> int | None:
        """Beginning-of-sequence token, or None."""
        return self._special(lib.llama_vocab_bos)

    @property
    def eos(self) -> int | None:
        """End-of-sequence token, or None."""
        return self._special(lib.llama_vocab_eos)

    @property
    def eot(self) -> int | None:
        """End-of-turn token, or None."""
        return self._special(lib.llama_vocab_eot)

    @property
    def nl(self) -> int | None:
        """Newline token, or None."""
        return self._special(lib.llama_vocab_nl)

    @property
    def sep(self) -> int | None:
        return self._special(lib.llama_vocab_sep)

    @property
    def pad(self) -> int | None:
        return self._special(lib.llama_vocab_pad)

    @property
    def mask(self) -> int | None:
        return self._special(lib.llama_vocab_mask)

    @property
    def fim_pre(self) -> int | None:
        """Fill-in-the-middle prefix token, or None."""
        return self._special(lib.llama_vocab_fim_pre)

    @property
    def fim_suf(self) -> int | None:
        return self._special(lib.llama_vocab_fim_suf)

    @property
    def fim_mid(self) -> int | None:
        return self._special(lib.llama_vocab_fim_mid)

    @property
    def fim_pad(self) -> int | None:
        return self._special(lib.llama_vocab_fim_pad)

    @property
    def fim_rep(self) -> int | None:
        return self._special(lib.llama_vocab_fim_rep)

    @property
    def fim_sep(self) -> int | None:
        return self._special(lib.llama_vocab_fim_sep)

    @property
    def type(self) -> str:
        """Tokenizer kind: ``spm``, ``bpe``, ``wpm``, ``ugm``, ``rwkv``, ``plamo2`` or ``none``."""
        names = {int(lib.LLAMA_VOCAB_TYPE_NONE): "none", int(lib.LLAMA_VOCAB_TYPE_SPM): "spm",
                 int(lib.LLAMA_VOCAB_TYPE_BPE): "bpe", int(lib.LLAMA_VOCAB_TYPE_WPM): "wpm",
                 int(lib.LLAMA_VOCAB_TYPE_UGM): "ugm", int(lib.LLAMA_VOCAB_TYPE_RWKV): "rwkv",
                 int(lib.LLAMA_VOCAB_TYPE_PLAMO2): "plamo2"}
        t = int(lib.llama_vocab_type(self.ptr))
        return names.get(t, str(t))

    def attr(self, token: int) -> TokenAttr:
        """The token's attributes (control, user-defined, byte, normalized, ...)."""
        return TokenAttr(int(lib.llama_vocab_get_attr(self.ptr, self.check_token(token))))

    def score(self, token: int) -> float:
        return float(lib.llama_vocab_get_score(self.ptr, self.check_token(token)))

    @property
    def add_bos(self) -> bool:
        """Whether the model wants a BOS token at the start of a prompt."""
        return bool(lib.llama_vocab_get_add_bos(self.ptr))

    @property
    def add_eos(self) -> bool:
        return bool(lib.llama_vocab_get_add_eos(self.ptr))

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT, ...)."""
        return bool(lib.llama_vocab_is_eog(self.ptr, self.check_token(token)))

    def is_control(self, token: int) -> bool:
        return bool(lib.llama_vocab_is_control(self.ptr, self.check_token(token)))

    def text(self, token: int) -> str:
        """The token's text as stored in the vocabulary."""
        return ffi.string(lib.llama_vocab_get_text(self.ptr, self.check_token(token))).decode(
            "utf-8", "replace")
