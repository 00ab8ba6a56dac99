"""Ollama's ``images`` (base64 strings beside a message's text) as the content
parts the chat layer takes: one ``image_url`` part per image, with a data URL,
before the message's text (where Ollama's templates put them)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .errors import bad_request

# the first bytes of the image formats llama.cpp's decoder (stb_image) reads
_MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
          (b"BM", "image/bmp"), (b"RIFF", "image/webp"))


def data_url(image: Any, where: str) -> str:
    """A data URL for one of Ollama's images (plain base64, or already a data URL)."""
    if not isinstance(image, str) or not image:
        raise bad_request(f"{where} must be a base64 string", where)
    if image.startswith("data:"):
        return image
    try:
        head = base64.b64decode(image[:16], validate=True)
    except (binascii.Error, ValueError):
        raise bad_request(f"{where} is not valid base64", where) from None
    mime = next((m for magic, m in _MAGIC if head.startswith(magic)),
                "application/octet-stream")
    return f"data:{mime};base64,{image}"


def image_parts(images: Any, where: str) -> list[dict[str, Any]]:
    """The ``image_url`` parts of a message's or request's ``images``."""
    if not isinstance(images, list):
        raise bad_request(f"{where} must be a list of base64 strings", where)
    return [{"type": "image_url", "image_url": {"url": data_url(img, f"{where}[{k}]")}}
            for k, img in enumerate(images)]


def with_images(message: dict[str, Any], where: str) -> dict[str, Any]:
    """``message`` with its ``images`` moved into its content as parts."""
    images = message.pop("images", None)
    if not images:
        return message
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise bad_request(f"{where}.content must be a string", f"{where}.content")
    parts = image_parts(images, f"{where}.images")
    if content:
        parts.append({"type": "text", "text": content})
    return {**message, "content": parts}
