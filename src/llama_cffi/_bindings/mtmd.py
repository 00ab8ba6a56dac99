"""``libmtmd`` functions (``tools/mtmd/mtmd.h``, ``mtmd-helper.h``): projector
contexts, bitmaps, prompt chunks, encoding and evaluation into a llama context.

libmtmd is optional in the build (``-DLLAMA_CFFI_MTMD=OFF`` leaves it out);
:data:`HAVE_MTMD` says whether this build has it and every function here
raises :class:`~llama_cffi.errors.MultimodalUnavailableError` when it does not.
libmtmd logs through its own logger; the first use routes it to the same
``llama_cffi`` logger as llama.cpp's, so failures carry its messages.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import (
    DecodeError,
    MediaError,
    MultimodalError,
    MultimodalUnavailableError,
    ProjectorLoadError,
)
from . import checked, log
from .init import ensure_initialised
from .raw import NULL, CData, ffi, lib

HAVE_MTMD: bool = hasattr(lib, "mtmd_init_from_file")
"""Whether this build compiled in libmtmd (``LLAMA_CFFI_MTMD``)."""

CHUNK_TEXT = int(lib.MTMD_INPUT_CHUNK_TYPE_TEXT) if HAVE_MTMD else 0
CHUNK_IMAGE = int(lib.MTMD_INPUT_CHUNK_TYPE_IMAGE) if HAVE_MTMD else 1
CHUNK_AUDIO = int(lib.MTMD_INPUT_CHUNK_TYPE_AUDIO) if HAVE_MTMD else 2

_log_lock = threading.Lock()
_log_installed = False


def require() -> None:
    """Raise MultimodalUnavailableError unless libmtmd was compiled in; route its log."""
    global _log_installed
    if not HAVE_MTMD:
        raise MultimodalUnavailableError(
            "multimodal support (libmtmd) was not compiled into this llama_cffi build; "
            "reinstall without -DLLAMA_CFFI_MTMD=OFF (it is ON by default)")
    if _log_installed:
        return
    with _log_lock:
        if not _log_installed:
            ensure_initialised()
            lib.mtmd_helper_log_set(lib._llama_cffi_log, NULL)  # also sets mtmd_log_set
            atexit.register(_uninstall_log)
            _log_installed = True


def _uninstall_log() -> None:
    lib.mtmd_helper_log_set(ffi.addressof(lib, "llama_cffi_log_discard"), NULL)


def default_marker() -> str:
    require()
    return checked.string(lib.mtmd_default_marker())


# -- the projector context -------------------------------------------------------


def context_params(*, use_gpu: bool, n_threads: int, media_marker: CData | None,
                   flash_attn: int | None, warmup: bool, image_min_tokens: int | None,
                   image_max_tokens: int | None, batch_max_tokens: int | None) -> CData:
    """``mtmd_context_params`` with the given fields (None keeps libmtmd's default).

    ``media_marker`` is a ``char[]`` the caller keeps alive while the call lasts.
    """
    require()
    p = lib.mtmd_context_params_default()
    p.use_gpu = use_gpu
    p.print_timings = False
    p.n_threads = n_threads
    if media_marker is not None:
        p.media_marker = media_marker
    if flash_attn is not None:
        p.flash_attn_type = flash_attn
    p.warmup = warmup
    if image_min_tokens is not None:
        p.image_min_tokens = image_min_tokens
    if image_max_tokens is not None:
        p.image_max_tokens = image_max_tokens
    if batch_max_tokens is not None:
        p.batch_max_tokens = batch_max_tokens
    return p


def init_from_file(path: bytes, model: CData, params: CData) -> CData:
    """``mtmd_init_from_file``; NULL (bad file, wrong text model) raises ProjectorLoadError."""
    require()
    return checked.pointer(lib.mtmd_init_from_file, path, model, params,
                           error=ProjectorLoadError,
                           what=f"failed to load the multimodal projector {path.decode()!r}")


def free(ptr: CData, *keep_alive: object) -> None:
    """``mtmd_free``; ``keep_alive`` (the text model) is freed only after this."""
    lib.mtmd_free(ptr)


def facts(ptr: CData) -> dict[str, Any]:
    """What a projector supports, read once at creation."""
    return {
        "vision": bool(lib.mtmd_support_vision(ptr)),
        "audio": bool(lib.mtmd_support_audio(ptr)),
        "audio_sample_rate": int(lib.mtmd_get_audio_sample_rate(ptr)),
        "marker": checked.string(lib.mtmd_get_marker(ptr)),
        "mrope": bool(lib.mtmd_decode_use_mrope(ptr)),
    }


# -- bitmaps ---------------------------------------------------------------------


def bitmap_from_rgb(pixels: np.ndarray) -> CData:
    """``mtmd_bitmap_init`` from a C-contiguous (h, w, 3) uint8 array (copied by C)."""
    require()
    h, w = int(pixels.shape[0]), int(pixels.shape[1])
    data = ffi.from_buffer("unsigned char[]", pixels)
    return checked.pointer(lib.mtmd_bitmap_init, w, h, data, error=MediaError,
                           what="could not create an image bitmap")


def bitmap_from_audio(samples: np.ndarray) -> CData:
    """``mtmd_bitmap_init_from_audio`` from a C-contiguous float32 PCM array (copied by C)."""
    require()
    data = ffi.from_buffer("float[]", samples)
    return checked.pointer(lib.mtmd_bitmap_init_from_audio, int(samples.shape[0]), data,
                           error=MediaError, what="could not create an audio bitmap")


def bitmap_from_file_bytes(ctx: CData, data: bytes) -> CData:
    """``mtmd_helper_bitmap_init_from_buf``: decode an image (stb_image: PNG,
    JPEG, BMP, GIF ...) or audio file (WAV, MP3, FLAC) held in memory. The
    bitmap's id is the SHA-256 of the bytes. Undecodable data raises MediaError."""
    require()
    mark = log.mark()
    buf = ffi.from_buffer("unsigned char[]", data)
    res = lib.mtmd_helper_bitmap_init_from_buf(ctx, buf, len(data), False,
                                               lib.mtmd_helper_init_opt_default())
    if res.video_ctx != NULL:  # only with MTMD_VIDEO builds: not taken here
        lib.mtmd_helper_video_free(res.video_ctx)
        if res.bitmap != NULL:
            lib.mtmd_bitmap_free(res.bitmap)
        raise MediaError("video input is not supported by llama_cffi")
    if res.bitmap == NULL:
        raise MediaError("the data is neither an image nor an audio file libmtmd can decode "
                         "(images: PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PIC, PNM; audio: "
                         "WAV, MP3, FLAC)", log=log.problems_since(mark))
    return res.bitmap


def bitmap_free(ptr: CData) -> None:
    lib.mtmd_bitmap_free(ptr)


def bitmap_info(ptr: CData) -> dict[str, Any]:
    return {"nx": int(lib.mtmd_bitmap_get_nx(ptr)), "ny": int(lib.mtmd_bitmap_get_ny(ptr)),
            "n_bytes": int(lib.mtmd_bitmap_get_n_bytes(ptr)),
            "is_audio": bool(lib.mtmd_bitmap_is_audio(ptr))}


def bitmap_id(ptr: CData) -> str:
    return checked.string(lib.mtmd_bitmap_get_id(ptr))


def bitmap_set_id(ptr: CData, ident: str) -> None:
    lib.mtmd_bitmap_set_id(ptr, ident.encode())


# -- tokenizing into chunks ------------------------------------------------------------


def chunks_free(ptr: CData, *keep_alive: object) -> None:
    """``mtmd_input_chunks_free``; ``keep_alive`` (the projector) is freed only after this."""
    lib.mtmd_input_chunks_free(ptr)


def tokenize(ctx: CData, text: str, bitmaps: Sequence[CData], *, add_special: bool,
             parse_special: bool) -> CData:
    """``mtmd_tokenize``: a new ``mtmd_input_chunks`` (free with :func:`chunks_free`)."""
    require()
    encoded = text.encode("utf-8")
    c_text = ffi.new("char[]", encoded)
    inp = ffi.new("mtmd_input_text *")
    inp.text = c_text
    inp.text_len = len(encoded)
    inp.add_special = add_special
    inp.parse_special = parse_special
    arr = ffi.new("mtmd_bitmap *[]", list(bitmaps)) if bitmaps else NULL
    chunks = lib.mtmd_input_chunks_init()
    if chunks == NULL:  # pragma: no cover - allocation failure
        raise MemoryError("mtmd_input_chunks_init failed")
    mark = log.mark()
    rc = lib.mtmd_tokenize(ctx, chunks, inp, arr, len(bitmaps))
    if rc != 0:
        lib.mtmd_input_chunks_free(chunks)
        if rc == 1:
            raise MediaError(
                f"the prompt has a different number of media markers than the "
                f"{len(bitmaps)} media given (each image or audio needs one marker)",
                log=log.problems_since(mark))
        if rc == 2:
            raise MediaError("the projector could not preprocess a media input (an audio "
                             "given to a vision-only projector, or the reverse?)",
                             log=log.problems_since(mark))
        raise MultimodalError(f"mtmd_tokenize failed (code {rc})", log=log.problems_since(mark))
    return chunks


def chunk_count(chunks: CData) -> int:
    return int(lib.mtmd_input_chunks_size(chunks))


def chunk_at(chunks: CData, i: int) -> CData:
    return lib.mtmd_input_chunks_get(chunks, i)


def chunk_info(chunk: CData) -> tuple[int, int, int, str]:
    """(type, n_tokens, n_pos, id) of one chunk (id is "" for text)."""
    return (int(lib.mtmd_input_chunk_get_type(chunk)),
            int(lib.mtmd_input_chunk_get_n_tokens(chunk)),
            int(lib.mtmd_input_chunk_get_n_pos(chunk)),
            checked.string(lib.mtmd_input_chunk_get_id(chunk)))


def chunk_text_tokens(chunk: CData) -> list[int]:
    n = ffi.new("size_t *")
    toks = lib.mtmd_input_chunk_get_tokens_text(chunk, n)
    return [] if toks == NULL else list(ffi.unpack(toks, int(n[0])))


# -- encoding and evaluation ------------------------------------------------------------


def encode_chunk(ctx: CData, chunk: CData, n_floats: int) -> np.ndarray:
    """``mtmd_encode_chunk`` then ``mtmd_get_output_embd``: the chunk's
    embeddings, copied into a float32 array of ``n_floats`` values."""
    mark = log.mark()
    rc = lib.mtmd_encode_chunk(ctx, chunk)
    if rc != 0:
        raise MultimodalError(f"the projector failed to encode a media chunk (code {rc})",
                              log=log.problems_since(mark))
    ptr = lib.mtmd_get_output_embd(ctx)
    out = np.empty(n_floats, dtype=np.float32)
    ffi.memmove(ffi.from_buffer("float[]", out), ptr, n_floats * 4)
    return out


def _eval_status(rc: int, what: str, mark: int) -> None:
    if rc != 0:
        raise DecodeError(f"{what}: llama.cpp failed with code {rc}", code=rc,
                          log=log.problems_since(mark))


def decode_media_chunk(ctx: CData, lctx: CData, chunk: CData, embd: np.ndarray, n_past: int,
                       seq_id: int, n_batch: int) -> int:
    """``mtmd_helper_decode_image_chunk`` with embeddings already computed
    (positions, M-RoPE and non-causal attention handled by libmtmd); the new n_past."""
    new_n_past = ffi.new("llama_pos *", n_past)
    mark = log.mark()
    buf = ffi.from_buffer("float[]", embd)
    rc = lib.mtmd_helper_decode_image_chunk(ctx, lctx, chunk, buf, n_past, seq_id, n_batch,
                                            new_n_past, NULL, NULL)
    _eval_status(rc, "decoding a media chunk", mark)
    return int(new_n_past[0])


def eval_text_chunk(ctx: CData, lctx: CData, chunk: CData, n_past: int, seq_id: int,
                    n_batch: int, logits_last: bool) -> int:
    """``mtmd_helper_eval_chunk_single`` on a text chunk; the new n_past."""
    new_n_past = ffi.new("llama_pos *", n_past)
    mark = log.mark()
    rc = lib.mtmd_helper_eval_chunk_single(ctx, lctx, chunk, n_past, seq_id, n_batch,
                                           logits_last, new_n_past)
    _eval_status(rc, "decoding a text chunk", mark)
    return int(new_n_past[0])
