"""Images in chat through the server (``--mmproj``), compared with llama-server
given the same tiny projector (tests/mmproj_synthetic.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from .mmproj_synthetic import make_image, png_bytes, write_mmproj
from .server_util import llama_server, ours

pytestmark = [pytest.mark.slow, pytest.mark.tools]


def test_image_chat_equals_llama_server(smollm2_path: Path, tools_dir: Path,
                                        tmp_path: Path) -> None:
    write_mmproj(tmp_path / "mmproj.gguf", 576)
    image = png_bytes(make_image(0))
    (tmp_path / "a.png").write_bytes(image)
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    message = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                           {"type": "text", "text": "What is in this picture?"}]}
    request = {"messages": [message], "max_tokens": 20, "temperature": 0}
    args = ["-m", str(smollm2_path), "--mmproj", str(tmp_path / "mmproj.gguf"), "-c", "1024",
            "-np", "1", "-t", "2"]
    with llama_server(tools_dir, [*args, "--jinja"], tmp_path / "ref.log") as ref:
        status, theirs = ref.post("/v1/chat/completions", request)
        assert status == 200, theirs
    with ours(args, tmp_path / "ours.log") as mine:
        status, body = mine.post("/v1/chat/completions", request)
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == \
            theirs["choices"][0]["message"]["content"]
        status, props = mine.get("/props")
        assert props["modalities"] == {"vision": True, "audio": False}
        # a server does not read its own files for a client
        local = {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": str(tmp_path / "a.png")}},
            {"type": "text", "text": "Describe it."}]}
        status, body = mine.post("/v1/chat/completions", {"messages": [local]})
        assert status == 400 and body["error"]["param"] == "messages", body
        broken = {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                + base64.b64encode(b"not a png").decode()}}]}
        status, body = mine.post("/v1/chat/completions", {"messages": [broken]})
        assert status == 400, body
        assert mine.get("/health")[0] == 200
