"""Chat messages with images and audio (OpenAI content parts) for ``LLM``.

Accepted parts, besides ``{"type": "text", "text": ...}``:

* ``{"type": "image_url", "image_url": {"url": URL}}`` (``image_url`` may
  also be the URL string itself), where URL is a ``data:`` URL
  (``data:image/png;base64,...``) or, when files are allowed, a local file
  path or ``file://`` URL;
* ``{"type": "input_audio", "input_audio": {"data": BASE64, "format": "wav"}}``
  (``data`` may also be a ``data:`` URL or, when files are allowed, a path);
* ``{"type": "image", "image": X}`` / ``{"type": "audio", "audio": X}`` with X
  a :class:`~llama_cffi.objects.multimodal.Bitmap`, a numpy array, bytes or a
  path (Python callers only).

Each medium becomes the projector's marker in the message text, joined as
llama.cpp's chat layer joins parts (text parts with newlines, no newline
around a marker); the chat template renders the messages, the projector
splits the prompt into text and media chunks, and the engine evaluates the
media into the request's slot (:mod:`llama_cffi.engine.media`). Remote
(``http``) URLs are refused: llama_cffi does not download anything.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlparse

from ..engine.media import MediaPrefill
from ..errors import MediaError, MultimodalError
from ..objects.model import Model
from ..objects.multimodal import Bitmap, MediaSource, MultimodalProjector
from ..objects.vocab import Vocab

__all__ = ["MEDIA_TYPES", "MediaHost", "MultimodalProjector", "has_media", "load_projector",
           "prefill_for", "split", "split_media"]

MEDIA_TYPES = ("image_url", "input_audio", "image", "audio")


class MediaHost(Protocol):
    """What this module needs of an LLM."""

    projector: MultimodalProjector | None
    vocab: Vocab
    allow_media_files: bool


def has_media(messages: Any) -> bool:
    """Whether any message has an image or audio content part."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        return False
    for m in messages:
        content = m.get("content") if isinstance(m, Mapping) else None
        if isinstance(content, Sequence) and not isinstance(content, (str, bytes)):
            for part in content:
                if isinstance(part, Mapping) and part.get("type") in MEDIA_TYPES:
                    return True
    return False


def _decode_data_url(url: str, where: str) -> bytes:
    head, sep, payload = url.partition(",")
    if not sep:
        raise MediaError(f"{where}: malformed data URL (no ',')")
    try:
        if head.endswith(";base64"):
            return base64.b64decode(payload, validate=True)
        return unquote(payload).encode("latin-1")
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"{where}: the data URL's base64 payload is invalid: {exc}") from None


def _source(value: Any, where: str, *, allow_files: bool, base64_ok: bool) -> MediaSource:
    """The media a part refers to (bytes, a path, an array or a Bitmap)."""
    if not isinstance(value, str):
        if isinstance(value, (Bitmap, bytes, bytearray, memoryview)) or hasattr(value, "shape"):
            return value  # type: ignore[no-any-return]
        if isinstance(value, os.PathLike):
            if not allow_files:
                raise MediaError(f"{where}: local files are not allowed here")
            return value
        raise MediaError(f"{where}: expected a URL string, bytes, an array or a Bitmap, "
                         f"not {type(value).__name__}")
    if value.startswith("data:"):
        return _decode_data_url(value, where)
    scheme = urlparse(value).scheme.lower()
    if scheme in ("http", "https", "ftp"):
        raise MediaError(f"{where}: remote URLs are not fetched; send the media as a data: "
                         "URL (base64) instead")
    if scheme == "file":
        path = Path(unquote(urlparse(value).path))
    elif base64_ok and not (allow_files and len(value) < 4096
                            and Path(value).expanduser().is_file()):
        try:  # input_audio's data: plain base64
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise MediaError(f"{where}: the data is not valid base64") from None
    elif os.sep in value or Path(value).suffix or base64_ok:
        path = Path(value)
    else:
        raise MediaError(f"{where}: not a data: URL" + (" or a file path" if allow_files else ""))
    if not allow_files:
        raise MediaError(f"{where}: local files are not allowed here (send a data: URL)")
    path = path.expanduser()
    if not path.is_file():
        raise MediaError(f"{where}: media file not found: {path}")
    return path


def _part_media(part: Mapping[str, Any], where: str, allow_files: bool) -> MediaSource:
    kind = part["type"]
    if kind == "image_url":
        spec = part.get("image_url")
        url = spec.get("url") if isinstance(spec, Mapping) else spec
        if url is None:
            raise MediaError(f"{where}: an image_url part needs image_url.url")
        return _source(url, where, allow_files=allow_files, base64_ok=False)
    if kind == "input_audio":
        spec = part.get("input_audio")
        data = (spec.get("data", spec.get("url")) if isinstance(spec, Mapping) else spec)
        if data is None:
            raise MediaError(f"{where}: an input_audio part needs input_audio.data (base64)")
        return _source(data, where, allow_files=allow_files, base64_ok=True)
    value = part.get(kind)
    if value is None:
        raise MediaError(f"{where}: an {kind!r} part needs its {kind!r} value")
    return _source(value, where, allow_files=allow_files, base64_ok=False)


def split_media(messages: Sequence[Mapping[str, Any]], marker: str, *,
                allow_files: bool = True) -> tuple[list[dict[str, Any]], list[MediaSource]]:
    """Messages whose media parts are replaced by ``marker`` (content as one
    string, joined as llama.cpp joins parts), and the media in prompt order."""
    out: list[dict[str, Any]] = []
    media: list[MediaSource] = []
    for i, m in enumerate(messages):
        content = m.get("content") if isinstance(m, Mapping) else None
        if not (isinstance(content, Sequence) and not isinstance(content, (str, bytes))
                and any(isinstance(p, Mapping) and p.get("type") in MEDIA_TYPES
                        for p in content)):
            out.append(dict(m))
            continue
        text, last_marker = "", False
        for j, part in enumerate(content):
            where = f"messages[{i}].content[{j}]"
            if not isinstance(part, Mapping) or "type" not in part:
                raise MediaError(f"{where} must be a dict with a 'type'")
            kind = part["type"]
            if kind == "text":
                piece = str(part.get("text", ""))
                if text and not last_marker:
                    text += "\n"
                text += piece
                last_marker = False
            elif kind in MEDIA_TYPES:
                media.append(_part_media(part, where, allow_files))
                text += marker
                last_marker = True
            else:
                raise MediaError(f"{where}: unsupported content part type {kind!r}")
        out.append({**m, "content": text})
    return out, media


def split(host: MediaHost, messages: Sequence[Mapping[str, Any]], *,
          allow_files: bool | None = None
          ) -> tuple[Sequence[Mapping[str, Any]], list[MediaSource]]:
    """``messages`` with their media parts replaced by the host's projector
    marker, and the media; ``(messages, [])`` unchanged when there are none.

    allow_files: whether parts may name local files (a server says False);
        None: ``host.allow_media_files``.
    """
    if not has_media(messages):
        return messages, []
    projector = host.projector
    if projector is None:
        raise MultimodalError("this model was loaded without a multimodal projector: it cannot "
                              "take images or audio (LLM(..., mmproj='mmproj.gguf'))")
    if allow_files is None:
        allow_files = host.allow_media_files
    return split_media(messages, projector.marker, allow_files=allow_files)


def prefill_for(host: MediaHost, prompt: str | bytes | Sequence[int],
                media: Sequence[MediaSource], add_special: bool) -> MediaPrefill:
    """The engine's :class:`MediaPrefill` for a text ``prompt`` holding one
    projector marker per medium (BOS as :meth:`LLM.tokenize` adds it)."""
    projector = host.projector
    if projector is None:
        raise MultimodalError("this model was loaded without a multimodal projector: it cannot "
                              "take images or audio (LLM(..., mmproj='mmproj.gguf'))")
    if isinstance(prompt, bytes):
        prompt = prompt.decode("utf-8")
    if not isinstance(prompt, str):
        raise TypeError("a prompt with media must be text holding the projector's marker")
    vocab = host.vocab
    bos = vocab.bos
    if add_special and bos is not None and vocab.add_bos:
        bos_text = vocab.token_to_piece(bos, special=True).decode()
        if bos_text and prompt.startswith(bos_text):
            add_special = False  # the chat template wrote it
    chunks = projector.tokenize(prompt, media, add_special=add_special)
    try:
        return MediaPrefill(projector, chunks)
    except BaseException:
        chunks.close()
        raise


def load_projector(model: Model, path: str | os.PathLike[str],
                   params: Mapping[str, Any] | None, n_threads: int) -> MultimodalProjector:
    """The projector of an LLM (``mmproj=``): ``params`` are
    :class:`MultimodalProjector` keywords; threads default to the context's."""
    kw = dict(params or {})
    kw.setdefault("n_threads", n_threads)
    return MultimodalProjector(model, path, **kw)
