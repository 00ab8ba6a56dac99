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


def test_ollama_images_as_openai_image_parts(smollm2_path: Path, tmp_path: Path) -> None:
    """Ollama's ``images`` (chat messages and /api/generate) are the same media
    as OpenAI's image parts: the same greedy text as the OpenAI endpoint."""
    import ollama

    write_mmproj(tmp_path / "mmproj.gguf", 576)
    image = png_bytes(make_image(1))
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    question = "What is in this picture?"
    args = ["-m", str(smollm2_path), "--mmproj", str(tmp_path / "mmproj.gguf"), "-c", "1024",
            "-np", "1", "-t", "2", "-a", "smol"]
    with ours(args, tmp_path / "ours.log") as mine:
        parts = [{"type": "image_url", "image_url": {"url": url}},
                 {"type": "text", "text": question}]
        status, body = mine.post("/v1/chat/completions", {
            "messages": [{"role": "user", "content": parts}], "max_tokens": 20,
            "temperature": 0})
        assert status == 200, body
        expected = body["choices"][0]["message"]["content"]
        client = ollama.Client(host=mine.url, timeout=120)
        reply = client.chat(model="smol", messages=[
            {"role": "user", "content": question, "images": [image]}],
            options={"temperature": 0, "num_predict": 20})
        assert reply.message.content == expected
        assert reply.prompt_eval_count is not None and reply.prompt_eval_count > 0
        streamed = "".join(part.message.content or "" for part in client.chat(
            model="smol", messages=[{"role": "user", "content": question, "images": [image]}],
            options={"temperature": 0, "num_predict": 20}, stream=True))
        assert streamed == expected
        # /api/generate applies the chat template to prompt + images the same way
        generated = client.generate(model="smol", prompt=question, images=[image],
                                    options={"temperature": 0, "num_predict": 20})
        assert generated.response == expected
        # a broken image or a wrong type is a 400 naming the field
        status, body = mine.post("/api/chat", {"model": "smol", "stream": False, "messages": [
            {"role": "user", "content": "x", "images": [base64.b64encode(b"nope").decode()]}]})
        assert status == 400, body
        status, body = mine.post("/api/chat", {"model": "smol", "stream": False, "messages": [
            {"role": "user", "content": "x", "images": [7]}]})
        assert status == 400 and "messages[0].images[0]" in body["error"], body
        assert mine.get("/health")[0] == 200


def test_ollama_images_without_projector_is_400(smollm2_path: Path, tmp_path: Path) -> None:
    image = base64.b64encode(png_bytes(make_image(2))).decode()
    with ours(["-m", str(smollm2_path), "-c", "512", "-np", "1", "-t", "2", "-a", "smol"],
              tmp_path / "ours.log") as mine:
        status, body = mine.post("/api/chat", {"model": "smol", "stream": False, "messages": [
            {"role": "user", "content": "x", "images": [image]}]})
        assert status == 400 and "projector" in body["error"], body
        status, body = mine.post("/api/generate", {"model": "smol", "stream": False,
                                                   "prompt": "x", "images": [image]})
        assert status == 400 and "projector" in body["error"], body
