"""llama.cpp's built-in chat formats (``llama_chat_apply_template``)."""

from __future__ import annotations

from collections.abc import Sequence

from . import checked
from .raw import NULL, CData, ffi, lib


def builtin_templates() -> list[str]:
    """``llama_chat_builtin_templates``: names of llama.cpp's built-in chat formats."""
    n = lib.llama_chat_builtin_templates(NULL, 0)
    arr = ffi.new("const char *[]", n)
    lib.llama_chat_builtin_templates(arr, n)
    return [checked.string(arr[i]) for i in range(n)]


def apply_template(template: str, messages: Sequence[tuple[str, str]],
                   add_generation_prompt: bool) -> str | None:
    """``llama_chat_apply_template`` over (role, content) pairs; ``template`` is a
    built-in name or a template text llama.cpp recognises. None when llama.cpp
    does not know the template."""
    keep: list[CData] = []  # the strings arr points to
    arr = ffi.new("struct llama_chat_message[]", max(1, len(messages)))
    for i, (role, content) in enumerate(messages):
        r = ffi.new("char[]", role.encode())
        c = ffi.new("char[]", content.encode())
        keep += [r, c]
        arr[i].role = r
        arr[i].content = c
    tmpl = template.encode()
    size = 4096 + sum(len(content) * 2 for _, content in messages)
    while True:
        buf = ffi.new("char[]", size)
        n = lib.llama_chat_apply_template(tmpl, arr, len(messages), add_generation_prompt,
                                          buf, size)
        if n < 0:
            return None
        if n <= size:
            return str(ffi.unpack(buf, n).decode("utf-8", "replace"))
        size = n + 1
