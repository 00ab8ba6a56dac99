"""Images and audio on the command line (``llama-cffi run/chat --mmproj ... --image ...``),
as llama.cpp's ``llama-mtmd-cli`` takes them.

``run``: the prompt is raw text; llama.cpp's media marker ``<__media__>`` in it
marks where each ``--image``/``--audio`` goes (in the order given: images
first, then audio); without a marker, one per medium is put before the
prompt, as llama-mtmd-cli does. ``chat``: the media are attached to the first
message; ``/image PATH`` and ``/audio PATH`` attach more to the next one.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..api.llm import LLM

LLAMA_MARKER = "<__media__>"


def add_media_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multimodal (llama.cpp's libmtmd)")
    g.add_argument("--mmproj", default=None, metavar="FILE",
                   help="multimodal projector GGUF for the model (--mmproj)")
    g.add_argument("--image", action="append", default=[], metavar="FILE",
                   help="an image file (repeat for several); needs --mmproj")
    g.add_argument("--audio", action="append", default=[], metavar="FILE",
                   help="an audio file (WAV, MP3, FLAC; repeat for several); needs --mmproj")


def media_files(a: argparse.Namespace) -> list[Path]:
    files = [Path(f) for f in [*getattr(a, "image", []), *getattr(a, "audio", [])]]
    if files and not getattr(a, "mmproj", None):
        raise SystemExit("llama-cffi: --image/--audio need --mmproj (the model's projector)")
    for f in files:
        if not f.is_file():
            raise SystemExit(f"llama-cffi: media file not found: {f}")
    return files


def run_prompt(llm: LLM, prompt: str, files: list[Path]) -> tuple[str, dict[str, Any]]:
    """The prompt with the projector's markers, and the ``media=`` keyword (or none)."""
    if not files or llm.projector is None:
        return prompt, {}
    if LLAMA_MARKER not in prompt:
        prompt = LLAMA_MARKER * len(files) + prompt
    return prompt.replace(LLAMA_MARKER, llm.projector.marker), {"media": files}


def user_message(text: str, files: list[Path]) -> dict[str, Any]:
    """A user message: ``text`` after the media parts."""
    if not files:
        return {"role": "user", "content": text}
    parts: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": str(f)}} for f in files]
    parts.append({"type": "text", "text": text})
    return {"role": "user", "content": parts}


def chat_command(text: str, pending: list[Path]) -> bool:
    """Handle ``/image PATH`` and ``/audio PATH`` (queued for the next message);
    whether ``text`` was such a command."""
    for cmd in ("/image", "/audio"):
        if text == cmd or text.startswith(cmd + " "):
            path = Path(text[len(cmd):].strip())
            if path.is_file():
                pending.append(path)
                print(f"{path} attached to the next message")
            else:
                print(f"no such file: {path}")
            return True
    return False
