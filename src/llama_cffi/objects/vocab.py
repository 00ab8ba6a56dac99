"""The vocabulary of a model: tokenizing, detokenizing, special tokens."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from numbers import Integral
from typing import TYPE_CHECKING

from .._bindings import model as _model
from .._bindings import vocab as _vocab
from .._bindings.enums import TokenAttr
from .._bindings.raw import CData
from ..errors import TokenError

if TYPE_CHECKING:
    from .handle import Handle


class Vocab:
    """Borrowed view of a model's ``llama_vocab``; keeps its owner (the
    :class:`~llama_cffi.Model`) alive.

    Obtained as ``model.vocab``. Token ids are checked against the vocabulary
    size before they reach C, so a bad id raises :class:`TokenError`. The
    facts that never change (size, kind, special tokens, BOS/EOS policy) are
    read from C once, here.

    Thread safety: may be shared across threads, as its Model; every call
    into C holds the model open (``model.close()`` waits for it).
    """

    def __init__(self, owner: Handle, ptr: CData | None = None) -> None:
        """``owner``: the handle whose pointer the vocabulary lives in (a Model);
        ``ptr``: its ``const llama_vocab *`` (default: the model's)."""
        self._owner = owner
        self._ptr: CData = _model.vocab(owner.ptr) if ptr is None else ptr
        self._n_tokens = _vocab.n_tokens(self._ptr)
        self._type = _vocab.type_name(self._ptr)
        special = _vocab.special_tokens(self._ptr)
        self._bos = special["bos"]
        self._eos = special["eos"]
        self._eot = special["eot"]
        self._sep = special["sep"]
        self._nl = special["nl"]
        self._pad = special["pad"]
        self._mask = special["mask"]
        self._fim_pre = special["fim_pre"]
        self._fim_suf = special["fim_suf"]
        self._fim_mid = special["fim_mid"]
        self._fim_pad = special["fim_pad"]
        self._fim_rep = special["fim_rep"]
        self._fim_sep = special["fim_sep"]
        self._add_bos = _vocab.add_bos(self._ptr)
        self._add_eos = _vocab.add_eos(self._ptr)

    @property
    def owner(self) -> Handle:
        """The object the vocabulary belongs to (the Model)."""
        return self._owner

    @property
    def ptr(self) -> CData:
        """The raw ``const llama_vocab *`` (raises ClosedError once the model is closed)."""
        self._owner.ptr  # raise if closed
        return self._ptr

    @contextmanager
    def borrow(self) -> Iterator[CData]:
        """The ``const llama_vocab *``, which the model will not free before the
        block ends (its ``close()`` waits); ClosedError once the model is closed."""
        with self._owner._using():
            yield self._ptr

    @property
    def n_tokens(self) -> int:
        """Number of tokens in the vocabulary (``n_vocab``)."""
        return self._n_tokens

    n_vocab = n_tokens

    def __len__(self) -> int:
        return self._n_tokens

    def check_token(self, token: object, what: str = "token") -> int:
        """Return ``token`` as int if it is a valid id, else raise TokenError
        (TypeError, naming ``what``, for anything but an integer: a float is not
        truncated, a str not parsed)."""
        if isinstance(token, bool) or not isinstance(token, Integral):
            raise TypeError(f"{what} must be an integer token id, got {token!r}")
        t = int(token)
        if not 0 <= t < self._n_tokens:
            raise TokenError(
                f"{what} id {t} is out of range: this vocabulary has ids 0..{self._n_tokens - 1}")
        return t

    @property
    def has_tokenizer(self) -> bool:
        """False for a vocabulary of type ``none`` (``tokenizer.ggml.model`` ``none``
        or ``no_vocab``): it has token ids but no texts, so it cannot tokenize or
        detokenize."""
        return self._type != "none"

    def require_tokenizer(self, what: str) -> None:
        """Raise TokenError if this vocabulary cannot do ``what`` (type ``none``:
        llama.cpp would abort the process on a GGML_ASSERT)."""
        if self._type == "none":
            raise TokenError(f"cannot {what}: this model has no vocabulary (its "
                             f"tokenizer.ggml.model is 'none'/'no_vocab'); it takes token "
                             f"ids or embeddings only")

    def _token(self, token: int, what: str) -> int:
        """``token`` checked, for a per-token lookup that needs the token texts."""
        t = self.check_token(token)
        self.require_tokenizer(what)
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
        if isinstance(text, str):
            data = text.encode("utf-8")
        elif isinstance(text, (bytes, bytearray, memoryview)):
            data = bytes(text)
        else:
            raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
        self.require_tokenizer("tokenize")
        with self.borrow() as ptr:
            return _vocab.tokenize(ptr, data, bool(add_special), bool(parse_special))

    # -- detokenizing -----------------------------------------------------

    def token_to_piece(self, token: int, *, special: bool = False, lstrip: int = 0) -> bytes:
        """The bytes a single token stands for (may be part of a UTF-8 character).

        special: render special/control tokens as their text (otherwise empty).
        """
        t = self._token(token, "turn a token into text")
        with self.borrow() as ptr:
            return _vocab.token_to_piece(ptr, t, bool(special), int(lstrip))

    def detokenize(self, tokens: Sequence[int], *, remove_special: bool = False,
                   unparse_special: bool = False) -> str:
        """Turn token ids back into text.

        remove_special: drop a leading BOS / trailing EOS the model adds.
        unparse_special: render special tokens as their text.
        """
        if isinstance(tokens, (str, bytes)):
            raise TypeError("tokens must be a sequence of token ids, not text")
        ids = [self.check_token(t) for t in tokens]
        self.require_tokenizer("detokenize")
        with self.borrow() as ptr:
            return _vocab.detokenize(ptr, ids, bool(remove_special), bool(unparse_special))

    # -- special tokens and attributes ------------------------------------

    @property
    def bos(self) -> int | None:
        """Beginning-of-sequence token, or None."""
        return self._bos

    @property
    def eos(self) -> int | None:
        """End-of-sequence token, or None."""
        return self._eos

    @property
    def eot(self) -> int | None:
        """End-of-turn token, or None."""
        return self._eot

    @property
    def nl(self) -> int | None:
        """Newline token, or None."""
        return self._nl

    @property
    def sep(self) -> int | None:
        return self._sep

    @property
    def pad(self) -> int | None:
        return self._pad

    @property
    def mask(self) -> int | None:
        return self._mask

    @property
    def fim_pre(self) -> int | None:
        """Fill-in-the-middle prefix token, or None."""
        return self._fim_pre

    @property
    def fim_suf(self) -> int | None:
        return self._fim_suf

    @property
    def fim_mid(self) -> int | None:
        return self._fim_mid

    @property
    def fim_pad(self) -> int | None:
        return self._fim_pad

    @property
    def fim_rep(self) -> int | None:
        return self._fim_rep

    @property
    def fim_sep(self) -> int | None:
        return self._fim_sep

    @property
    def type(self) -> str:
        """Tokenizer kind: ``spm``, ``bpe``, ``wpm``, ``ugm``, ``rwkv``, ``plamo2`` or ``none``."""
        return self._type

    def attr(self, token: int) -> TokenAttr:
        """The token's attributes (control, user-defined, byte, normalized, ...)."""
        t = self._token(token, "read a token's attributes")
        with self.borrow() as ptr:
            return TokenAttr(_vocab.attr(ptr, t))

    def score(self, token: int) -> float:
        t = self._token(token, "read a token's score")
        with self.borrow() as ptr:
            return _vocab.score(ptr, t)

    @property
    def add_bos(self) -> bool:
        """Whether the model wants a BOS token at the start of a prompt."""
        return self._add_bos

    @property
    def add_eos(self) -> bool:
        return self._add_eos

    def is_eog(self, token: int) -> bool:
        """Whether ``token`` ends generation (EOS, EOT, ...)."""
        t = self.check_token(token)
        with self.borrow() as ptr:
            return _vocab.is_eog(ptr, t)

    def is_control(self, token: int) -> bool:
        t = self._token(token, "read a token's attributes")
        with self.borrow() as ptr:
            return _vocab.is_control(ptr, t)

    def text(self, token: int) -> str:
        """The token's text as stored in the vocabulary."""
        t = self._token(token, "read a token's text")
        with self.borrow() as ptr:
            return _vocab.text(ptr, t)
