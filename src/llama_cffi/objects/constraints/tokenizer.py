"""A model's vocabulary as llguidance's tokenizer (its C API's), made once per model.

llguidance computes its token masks over the byte strings of the tokens. They
come from the model's own vocabulary: each token's piece as llama.cpp renders
it (``llama_token_to_piece`` with special tokens shown), so byte-level BPE
(SmolLM2: ``Ġ`` is a space) and SentencePiece (Gemma 3: ``▁`` is a space,
``<0x0A>`` is a newline byte) come out as the bytes the token stands for.
Control tokens (and user-defined ones written ``<...>``) are marked special
with llguidance's ``\\xff`` prefix, so that no grammar text can produce them;
the end-of-generation tokens (EOS, EOT, ``<end_of_turn>`` ...) are the ones a
grammar allows once it accepts. This is what llama.cpp's own llguidance
integration (``LLAMA_LLGUIDANCE``) hands to llguidance.

Building it reads every token once (about 0.2 s for a 49k vocabulary, 1.5 s
for Gemma 3's 262k), so the result is kept per model.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any

from ..._bindings import llg as _llg
from ..._bindings import vocab as _vocab
from ..._bindings.enums import TokenAttr
from ..handle import Handle

if TYPE_CHECKING:
    from ..vocab import Vocab

__all__ = ["Pieces", "Tokenizer", "pieces_of", "tokenizer_for"]

_SPECIAL = TokenAttr.CONTROL | TokenAttr.USER_DEFINED
_lock = threading.Lock()
_tokenizers: weakref.WeakKeyDictionary[Any, Tokenizer] = weakref.WeakKeyDictionary()


class Pieces:
    """The vocabulary's tokens as llguidance reads them.

    tokens: one byte string per token id (special tokens prefixed ``\\xff``);
    special: the ids of the special tokens; eog: the end-of-generation ids.
    """

    def __init__(self, tokens: list[bytes], special: list[int], eog: list[int]) -> None:
        self.tokens = tokens
        self.special = special
        self.eog = eog


def pieces_of(vocab: Vocab) -> Pieces:
    """Every token's bytes, the special tokens and the end-of-generation tokens."""
    vocab.require_tokenizer("constrain output with llguidance")
    tokens: list[bytes] = []
    special: list[int] = []
    eog: list[int] = []
    with vocab.borrow() as ptr:
        for i in range(vocab.n_tokens):
            piece = _vocab.token_to_piece(ptr, i, True, 0)
            attr = _vocab.attr(ptr, i)
            if attr & TokenAttr.CONTROL or (attr & TokenAttr.USER_DEFINED and
                                            piece.startswith(b"<") and piece.endswith(b">")):
                piece = b"\xff" + piece
                special.append(i)
            if attr & _SPECIAL and _vocab.is_eog(ptr, i):
                eog.append(i)
            tokens.append(piece)
        for t in (vocab.eos, vocab.eot):  # marked EOG whatever their attributes
            if t is not None and t not in eog and _vocab.is_eog(ptr, t):
                eog.append(t)
    return Pieces(tokens, special, sorted(eog))


class Tokenizer(Handle):
    """llguidance's tokenizer for one model (``llama_cffi_llg_tok *``, ``cdef/llg.h``):
    the tokens' bytes, the end-of-generation ids, and ``llama_tokenize`` on
    the model's vocabulary for text llguidance must tokenize itself.

    Closed with its model (``close()`` stops the tokenizing; llguidance's
    memory goes with the last matcher made from it). Threads may share it.
    """

    def __init__(self, vocab: Vocab, pieces: Pieces) -> None:
        if not pieces.eog and vocab.eos is None:
            raise ValueError("the vocabulary has no end-of-generation token for a grammar "
                             "to end with")
        eos: list[int] = pieces.eog or [int(vocab.eos)]  # type: ignore[arg-type]
        with vocab.borrow() as ptr:  # valid until the model closes, which closes this first
            self._own(_llg.tokenizer_new(ptr, pieces.tokens, eos), _llg.tokenizer_close)
        self.owner = vocab.owner
        self.vocab_size = vocab.n_tokens
        self.eos_tokens = list(eos)
        self.owner._adopt(self)

    def decode_bytes(self, ids: list[int]) -> bytes:
        """The bytes the tokens ``ids`` stand for (special tokens left out)."""
        return _llg.decode(self.ptr, [int(t) for t in ids])


def tokenizer_for(vocab: Vocab) -> Tokenizer:
    """llguidance's tokenizer for ``vocab``'s model, built on first use and kept
    while the model lives (ValueError when llguidance cannot be loaded)."""
    owner = vocab.owner
    with _lock:
        tok = _tokenizers.get(owner)
        if tok is None or tok.closed:
            tok = _tokenizers[owner] = Tokenizer(vocab, pieces_of(vocab))
        return tok
