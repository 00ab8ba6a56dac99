"""Images and audio through llama.cpp's multimodal library (``libmtmd``).

A :class:`MultimodalProjector` loads a projector GGUF ("mmproj", ``--mmproj``)
for a text :class:`~llama_cffi.Model`. It turns media into :class:`Bitmap`
objects (image files, bytes, ``(h, w, 3)`` uint8 arrays, float32 audio
samples), splits a prompt that holds one marker per medium into text and
media chunks (:class:`MediaPrompt`), and evaluates those chunks into one
sequence of a :class:`~llama_cffi.Context`: text tokens in batches of
``n_batch``, media as embeddings placed by libmtmd's helper (positions,
M-RoPE and non-causal attention as each model needs).

Encoded media are cached by their content hash (the bitmap id: SHA-256 of
the file bytes or of the pixels), so asking about the same image again does
not run the vision encoder again; ``n_encoded`` counts the encoder runs.

>>> proj = MultimodalProjector(model, "mmproj.gguf")            # doctest: +SKIP
>>> with proj.tokenize(f"Look: {proj.marker} What is it?", [proj.load("cat.png")]) as p:
...     n_past = proj.evaluate(ctx, p)                         # doctest: +SKIP

Thread safety: a projector may be shared across threads (tokenizing is
thread-safe in libmtmd); encoding and evaluation run one at a time (a lock);
``close()`` waits until no other thread is inside a call on it.
A Bitmap or MediaPrompt is immutable after creation and may be shared.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from .._bindings import mtmd as _mt
from .._bindings.raw import ffi
from ..errors import ContextFullError, MediaError, ProjectorLoadError
from .context import Context, default_threads
from .handle import Handle, SharedUse

if TYPE_CHECKING:
    from .model import Model

IMAGE, AUDIO, TEXT = "image", "audio", "text"
_KINDS = {_mt.CHUNK_TEXT: TEXT, _mt.CHUNK_IMAGE: IMAGE, _mt.CHUNK_AUDIO: AUDIO}

HAVE_MULTIMODAL: bool = _mt.HAVE_MTMD
"""Whether this build has libmtmd (``-DLLAMA_CFFI_MTMD``, ON by default)."""


class Bitmap(Handle):
    """An image (RGB pixels) or audio clip (float32 PCM) ready for a projector.

    Make one with :meth:`from_array`, :meth:`from_audio`, or
    :meth:`MultimodalProjector.load` (files and encoded bytes: PNG, JPEG,
    BMP, GIF ... and WAV, MP3, FLAC). ``id`` is a content hash: the encoded
    media cache of a projector is keyed by it.
    """

    _FACTS = ("width", "height", "n_bytes", "is_audio", "id")

    def __init__(self, ptr: Any, ident: str | None = None) -> None:
        """Take ownership of an ``mtmd_bitmap *`` (use the class methods)."""
        self._own(ptr, _mt.bitmap_free)
        if ident is not None:
            _mt.bitmap_set_id(ptr, ident)
        info = _mt.bitmap_info(ptr)
        self.width: int = info["nx"]
        self.height: int = info["ny"]
        self.n_bytes: int = info["n_bytes"]
        self.is_audio: bool = info["is_audio"]
        self.id: str = _mt.bitmap_id(ptr)

    @classmethod
    def from_array(cls, pixels: np.ndarray) -> Bitmap:
        """An image from an ``(height, width, 3)`` uint8 RGB array (copied)."""
        arr = np.asarray(pixels)
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
            raise MediaError(f"pixels must be an (height, width, 3) uint8 RGB array, not "
                             f"{arr.dtype} with shape {arr.shape}")
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            raise MediaError(f"the image is empty (shape {arr.shape})")
        arr = np.ascontiguousarray(arr)
        digest = hashlib.sha256(f"rgb{arr.shape}".encode() + arr.tobytes()).hexdigest()
        return cls(_mt.bitmap_from_rgb(arr), digest)

    @classmethod
    def from_audio(cls, samples: np.ndarray) -> Bitmap:
        """Audio from mono PCM samples in [-1, 1] (float32, at the projector's
        ``audio_sample_rate``; copied)."""
        arr = np.asarray(samples)
        if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind != "f":
            raise MediaError(f"audio samples must be a non-empty 1-D float array, not "
                             f"{arr.dtype} with shape {arr.shape}")
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        digest = hashlib.sha256(b"pcm" + arr.tobytes()).hexdigest()
        return cls(_mt.bitmap_from_audio(arr), digest)

    def __repr__(self) -> str:
        if self.closed:
            return "<Bitmap (closed)>"
        if self.is_audio:
            return f"<Bitmap audio {self.n_bytes // 4} samples>"
        return f"<Bitmap image {self.width}x{self.height}>"


def _looks_like_audio(data: bytes) -> bool:
    """The magic bytes libmtmd's helper takes for audio (WAV, MP3, FLAC)."""
    return ((data[:4] == b"RIFF" and data[8:12] == b"WAVE") or data[:3] == b"ID3"
            or data[:4] == b"fLaC" or (len(data) > 1 and data[0] == 0xFF
                                       and data[1] & 0xE0 == 0xE0))


MediaSource = Union[Bitmap, np.ndarray, bytes, bytearray, memoryview, str, "os.PathLike[str]"]
"""What :meth:`MultimodalProjector.load` accepts."""


@dataclass(frozen=True)
class Chunk:
    """One chunk of a tokenized prompt: text tokens, or one image/audio.

    kind: ``"text"``, ``"image"`` or ``"audio"``.
    n_tokens: tokens (text) or embeddings (media) it puts in the KV cache.
    n_pos: positions it advances the sequence by (differs from n_tokens
        for M-RoPE models).
    id: the media's content hash ("" for text).
    tokens: the token ids of a text chunk (empty for media).
    key: what the encoded-media cache knows it by: the id and the slice
        number (models that cut an image into tiles give every tile the
        image's id); "" for text.
    """

    kind: str
    n_tokens: int
    n_pos: int
    id: str
    tokens: tuple[int, ...]
    key: str = ""


class MediaPrompt(Handle):
    """A prompt split into text and media chunks (``mtmd_input_chunks``), made
    by :meth:`MultimodalProjector.tokenize`; keeps its projector alive."""

    _FACTS = ("chunks",)

    def __init__(self, projector: MultimodalProjector, ptr: Any) -> None:
        self._own(ptr, _mt.chunks_free, projector)
        self.projector = projector
        chunks = []
        run_id, run_n = "", 0  # tiles of one image: consecutive media chunks, one id
        for i in range(_mt.chunk_count(ptr)):
            c = _mt.chunk_at(ptr, i)
            kind, n_tokens, n_pos, ident = _mt.chunk_info(c)
            toks = tuple(_mt.chunk_text_tokens(c)) if kind == _mt.CHUNK_TEXT else ()
            key = ""
            if kind != _mt.CHUNK_TEXT and ident:
                run_n = run_n + 1 if ident == run_id else 0
                run_id = ident
                key = f"{ident}#{run_n}"
            chunks.append(Chunk(_KINDS.get(kind, "unknown"), n_tokens, n_pos, ident, toks, key))
        self.chunks: tuple[Chunk, ...] = tuple(chunks)

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.chunks)

    @property
    def n_pos(self) -> int:
        """Positions the whole prompt takes in a sequence."""
        return sum(c.n_pos for c in self.chunks)

    def c_chunk(self, i: int) -> Any:
        """The raw ``mtmd_input_chunk *`` of chunk ``i`` (valid while this object is open)."""
        return _mt.chunk_at(self.ptr, i)

    def close(self) -> None:
        """Free the chunks, after an evaluation running on another thread. Idempotent."""
        if self._ptr is None:
            return
        with self.projector._lock:
            super().close()

    def __len__(self) -> int:
        return len(self.chunks)

    def __repr__(self) -> str:
        if self.closed:
            return "<MediaPrompt (closed)>"
        kinds = ", ".join(f"{c.kind}:{c.n_tokens}" for c in self.chunks)
        return f"<MediaPrompt [{kinds}]>"


class MultimodalProjector(Handle):
    """A multimodal projector (mmproj GGUF) for a text model (``--mmproj``).

    model: the text :class:`~llama_cffi.Model` it projects into (kept alive;
        closing the model closes the projector). Its embedding size must
        match the projector's output (else ProjectorLoadError).
    path: the projector GGUF (``--mmproj``).
    use_gpu: run the encoder on the GPU when there is one (``--no-mmproj-offload``
        turns it off in llama.cpp).
    n_threads: encoder threads (``-t``; default: the CPUs this process may use).
    flash_attn: the encoder's flash attention (``-fa``: None = auto,
        True/False = on/off).
    warmup: run one warm-up encode at load (``--no-warmup`` turns it off).
    image_min_tokens, image_max_tokens: bounds on the tokens of one image for
        dynamic-resolution models (``--image-min-tokens``/``--image-max-tokens``).
    cache_size: encoded media kept (by content hash) for reuse.

    ``marker`` is the text that stands for one medium in a prompt: it is made
    unique per projector, so a user's text can never smuggle one in.
    """

    _FACTS = ("supports_vision", "supports_audio", "audio_sample_rate", "marker", "uses_mrope")

    def __init__(self, model: Model, path: str | os.PathLike[str], *, use_gpu: bool = True,
                 n_threads: int | None = None, flash_attn: bool | None = None,
                 warmup: bool = True, image_min_tokens: int | None = None,
                 image_max_tokens: int | None = None, cache_size: int = 16) -> None:
        _mt.require()
        p = Path(path).expanduser()
        if not p.is_file():
            raise ProjectorLoadError(f"multimodal projector file not found: {p}")
        if n_threads is not None and n_threads < 1:
            raise ValueError("n_threads must be >= 1")
        if cache_size < 0:
            raise ValueError("cache_size must be >= 0")
        marker = f"<__media_{secrets.token_hex(8)}__>"
        c_marker = ffi.new("char[]", marker.encode())
        fa = None if flash_attn is None else (1 if flash_attn else 0)
        params = _mt.context_params(
            use_gpu=use_gpu, n_threads=n_threads or default_threads(), media_marker=c_marker,
            flash_attn=fa, warmup=warmup, image_min_tokens=image_min_tokens,
            image_max_tokens=image_max_tokens, batch_max_tokens=None)
        with model._using() as model_ptr:
            ptr = _mt.init_from_file(os.fsencode(p), model_ptr, params)
            self._own(ptr, _mt.free, model)
            model._adopt(self)
        self._shared = SharedUse()  # calls in progress (any thread); close() waits for them
        self.model = model
        self.path = p
        self._n_embd = model.n_embd_inp
        self._lock = threading.RLock()  # encode/evaluate: libmtmd's context is not reentrant
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_size = cache_size
        self.n_encoded = 0
        """Media chunks encoded so far (a cache hit does not count)."""
        f = _mt.facts(ptr)
        self.supports_vision: bool = f["vision"]
        self.supports_audio: bool = f["audio"]
        self.audio_sample_rate: int = f["audio_sample_rate"]
        """Hz the audio encoder expects (-1 without audio support)."""
        self.marker: str = f["marker"]
        self.uses_mrope: bool = f["mrope"]
        """Whether the text model takes M-RoPE positions (Qwen2-VL style)."""

    # -- media ------------------------------------------------------------------------

    def load(self, source: MediaSource) -> Bitmap:
        """A :class:`Bitmap` from a file path, encoded bytes (image or audio file),
        an ``(h, w, 3)`` uint8 array, or a Bitmap (returned as is).

        Images that do not decode raise MediaError; so does audio for a
        projector without an audio encoder."""
        if isinstance(source, Bitmap):
            source.ptr  # raise if closed
            return source
        if isinstance(source, np.ndarray):
            return Bitmap.from_array(source)
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
        elif isinstance(source, (str, os.PathLike)):
            fp = Path(source).expanduser()
            if not fp.is_file():
                raise MediaError(f"media file not found: {fp}")
            data = fp.read_bytes()
        else:
            raise TypeError("media must be a Bitmap, a numpy array, bytes or a file path, "
                            f"not {type(source).__name__}")
        if not data:
            raise MediaError("the media data is empty")
        if _looks_like_audio(data) and not self.supports_audio:
            raise MediaError(f"the projector {self.path.name} has no audio encoder: it "
                             "cannot take audio")
        with self._using() as ptr:
            return Bitmap(_mt.bitmap_from_file_bytes(ptr, data))

    def tokenize(self, prompt: str, media: Sequence[MediaSource] = (), *,
                 add_special: bool = True, parse_special: bool = True) -> MediaPrompt:
        """Split ``prompt`` at each :attr:`marker` into text and media chunks
        (``mtmd_tokenize``): one medium per marker, in order.

        add_special: add the model's BOS (and other automatic specials).
        parse_special: read special tokens (``<|im_start|>``) in the text.
        """
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
        bitmaps: list[Bitmap] = []
        made: list[Bitmap] = []
        try:
            for m in media:
                b = self.load(m)
                if b is not m:
                    made.append(b)
                self._check_kind(b)
                bitmaps.append(b)
            n_markers = prompt.count(self.marker)
            if n_markers != len(bitmaps):
                raise MediaError(f"the prompt has {n_markers} media markers but "
                                 f"{len(bitmaps)} media were given (one marker each: "
                                 f"projector.marker)")
            with self._using() as ptr:
                chunks = _mt.tokenize(ptr, prompt, [b.ptr for b in bitmaps],
                                      add_special=add_special, parse_special=parse_special)
                return MediaPrompt(self, chunks)
        finally:
            for b in made:
                b.close()

    def _check_kind(self, b: Bitmap) -> None:
        if b.is_audio and not self.supports_audio:
            raise MediaError(f"the projector {self.path.name} has no audio encoder: it "
                             "cannot take audio")
        if not b.is_audio and not self.supports_vision:
            raise MediaError(f"the projector {self.path.name} has no vision encoder: it "
                             "cannot take images")

    # -- encoding and evaluation --------------------------------------------------------

    def encode(self, prompt: MediaPrompt, i: int) -> np.ndarray:
        """The embeddings of media chunk ``i`` of ``prompt``, shape
        ``(n_tokens, n_embd)``: from the cache, or encoded now (then cached)."""
        chunk = prompt.chunks[i]
        if chunk.kind == TEXT:
            raise ValueError(f"chunk {i} is text, not media")
        with self._lock:
            hit = self._cache.get(chunk.key) if chunk.key else None
            if hit is not None and hit.shape[0] == chunk.n_tokens:
                self._cache.move_to_end(chunk.key)
                return hit
            with self._using() as ptr:
                flat = _mt.encode_chunk(ptr, prompt.c_chunk(i), chunk.n_tokens * self._n_embd)
            self.n_encoded += 1
            embd = flat.reshape(chunk.n_tokens, self._n_embd)
            embd.setflags(write=False)
            if chunk.key and self.cache_size:
                self._cache[chunk.key] = embd
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            return embd

    def clear_cache(self) -> None:
        """Forget the encoded media."""
        with self._lock:
            self._cache.clear()

    def evaluate_chunk(self, ctx: Context, prompt: MediaPrompt, i: int, *, n_past: int,
                       seq_id: int = 0, n_batch: int | None = None,
                       logits_last: bool = False) -> int:
        """Evaluate chunk ``i`` of ``prompt`` into sequence ``seq_id`` of ``ctx``
        at position ``n_past``; returns the position after it.

        Text goes in batches of ``n_batch`` (default: the context's); media are
        encoded (or taken from the cache) and decoded by libmtmd's helper,
        which places them (M-RoPE included) and switches to non-causal
        attention where the model needs it. logits_last: keep the logits of
        a text chunk's last token (to sample after it).
        """
        if ctx.model is not self.model:
            raise ValueError("the context belongs to another model than the projector's")
        if not 0 <= seq_id < ctx.n_seq_max:
            raise ValueError(f"seq_id {seq_id} is outside 0..{ctx.n_seq_max - 1}")
        chunk = prompt.chunks[i]
        if n_past + chunk.n_pos > ctx.n_ctx_seq:
            raise ContextFullError(
                f"{n_past + chunk.n_pos} positions do not fit the context of {ctx.n_ctx_seq} "
                "per sequence; create the context with a larger n_ctx")
        step = n_batch or ctx.n_batch
        if step < 1:
            raise ValueError("n_batch must be >= 1")
        with self._lock:
            embd = self.encode(prompt, i) if chunk.kind != TEXT else None
            with self._using() as ptr:
                lctx = ctx._enter()
                try:
                    # the KV cache changes: count it as Context's own decodes do
                    # (an engine notices changes made behind its back by this)
                    if threading.get_ident() != ctx._quiet_thread:
                        ctx._changes += 1
                    if embd is None:
                        return _mt.eval_text_chunk(ptr, lctx, prompt.c_chunk(i), n_past, seq_id,
                                                   step, logits_last)
                    return _mt.decode_media_chunk(ptr, lctx, prompt.c_chunk(i), embd, n_past,
                                                  seq_id, step)
                finally:
                    ctx._leave()

    def evaluate(self, ctx: Context, prompt: MediaPrompt, *, n_past: int = 0, seq_id: int = 0,
                 n_batch: int | None = None, logits_last: bool = True) -> int:
        """Evaluate every chunk of ``prompt`` (see :meth:`evaluate_chunk`); the
        position after the prompt. ``logits_last`` keeps the logits of the last
        token when the prompt ends with text."""
        for i in range(len(prompt.chunks)):
            last = i == len(prompt.chunks) - 1
            n_past = self.evaluate_chunk(ctx, prompt, i, n_past=n_past, seq_id=seq_id,
                                         n_batch=n_batch, logits_last=logits_last and last)
        return n_past

    def close(self) -> None:
        """Free the projector once no other thread is inside a call on it. Idempotent."""
        if self._ptr is None:
            return
        shared = self._shared
        if shared is None:
            self._close_now()
        else:
            shared.close("multimodal projector", self._close_now)

    def _close_now(self) -> None:
        with self._lock:
            self._cache.clear()
            super().close()

    def __repr__(self) -> str:
        if self.closed:
            return f"<MultimodalProjector {self.path} (closed)>"
        kinds = [k for k, on in (("vision", self.supports_vision),
                                 ("audio", self.supports_audio)) if on]
        return f"<MultimodalProjector {self.path.name}: {'+'.join(kinds)}>"
